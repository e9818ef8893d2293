/* Full training's weight gradients (--network full) against the reference
 * kit. The kit's LoRA training case (refkit/sd/vectors/train_lora) holds
 * PyTorch's gradients of the adapters' factors; for a linear module with
 * y = (W + s B A) x the factors' gradients follow from the weight's,
 * G = dL/dW:  dL/dB = s G A^T  and  dL/dA = s B^T G. So the step is built
 * with the kit's adapter applied and every UNet weight as a parameter, and
 * each adapted weight's gradient is checked through both products. Weights
 * no adapter touches (convolutions, norms, biases, embeddings) are checked
 * against central differences of the loss. */
#include "sd_train_fixture.h"

#include "grad_check.h"

typedef struct {
    fixture *f;
    vkl_sd_train_step *s;
} stepper;

static float run_loss(void *user)
{
    stepper *st = user;
    fixture *f = st->f;
    vkl_err e = {{0}};
    float loss;
    if (vkl_sd_train_step_run(st->s, f->noisy, f->t, f->ehs, f->target, NULL, 1, 0, &loss, &e)) fail_msg("%s", e.msg);
    return loss;
}

/* Central differences of the loss for the largest gradient elements of
 * weights no adapter touches. */
static void check_unadapted(fixture *f, const vkl_full_net *net, vkl_sd_train_step *s)
{
    static const char *names[] = {"unet.conv_in.weight", "unet.conv_out.bias",
                                  "unet.time_embedding.linear_1.weight",
                                  "unet.down_blocks.0.resnets.0.conv1.weight",
                                  "unet.down_blocks.0.resnets.0.norm1.weight",
                                  "unet.up_blocks.1.attentions.0.transformer_blocks.0.norm2.bias",
                                  "unet.mid_block.resnets.1.conv2.bias", "unet.conv_norm_out.weight"};
    stepper st = {f, s};
    for (size_t q = 0; q < sizeof names / sizeof *names; q++) vkl_test_check_difference(f->c, net, s, names[q], run_loss, &st);
}

static void full_gradients(void **state)
{
    (void)state;
    (void)grad_error; /* the fixture's LoRA comparison; this test compares weight gradients */
    VKL_REQUIRE_SHARED(VEC);
    fixture f;
    setup(&f, "default", 0);
    vkl_err e = {{0}};
    vkl_full_net net;
    if (vkl_full_net_init(f.c, f.w, NULL, NULL, 0, &net, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    vkl_sd_train_opts o = {0, NULL, NULL, 1.0f, NULL, 0, 0, NULL, net.params, net.names, net.n, NULL};
    vkl_sd_train_step *s;
    if (vkl_sd_train_step_new_ex(f.c, &f.unet, &shape, &o, &s, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    stepper st = {&f, s};
    run_loss(&st);
    assert_true(vkl_test_check_adapted_weights(f.c, VEC, &f.lora, &net, s, 0) >= 8);
    check_unadapted(&f, &net, s);
    vkl_sd_train_step_free(s);
    vkl_full_net_free(&net);
    teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(full_gradients)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

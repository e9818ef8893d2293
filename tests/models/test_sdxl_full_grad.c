/* SDXL full training's weight gradients (--network full --train-te) against
 * the reference kit. The kit's SDXL LoRA case
 * (refkit/sdxl/vectors/train_lora.safetensors) holds PyTorch's loss and the
 * gradients of the UNet adapters' factors for given token ids; for a linear
 * module with y = (W + s B A) x they follow from the weight's gradient
 * G = dL/dW: dL/dB = s G A^T and dL/dA = s B^T G. So the step is built with
 * the kit's adapter applied, the text encoders in the graph, and as
 * parameters exactly the weights `vklora train --network full --train-te`
 * trains (vkl_full_net_sd_wanted: the step refuses a parameter that does not
 * reach the loss, so the rule is checked too); each adapted weight's gradient
 * is checked through both products, and weights no adapter touches (the
 * encoders', the added conditioning's, convolutions) against central
 * differences of the loss. */
#include "grad_check.h"
#include "sdxl_kit_fixture.h"

typedef struct {
    sdxl_kit k;
    vkl_full_net net;
    vkl_sd_train_step *s;
} fixture;

static void setup(fixture *f)
{
    memset(f, 0, sizeof *f);
    vkl_lora_targets tg;
    sdxl_kit_open(&f->k, &tg);
    vkl_lora_targets_free(&tg);
    sdxl_kit_build(&f->k, 0);
    vkl_err e = {{0}};
    vkl_full_net_sd_rule rule = vkl_full_net_sd_rule_for(f->k.cfg, 1, 1);
    if (vkl_full_net_init(f->k.c, f->k.w, vkl_full_net_sd_wanted, &rule, 0, &f->net, &e)) fail_msg("%s", e.msg);
    vkl_sd_train_opts o = {0, NULL, NULL, 1.0f, &f->k.te, 0, 0, NULL, f->net.params, f->net.names, f->net.n, &f->k.te2};
    if (vkl_sd_train_step_new_ex(f->k.c, &f->k.unet, &shape, &o, &f->s, &e)) fail_msg("%s", e.msg);
}

static void teardown(fixture *f)
{
    vkl_sd_train_step_free(f->s);
    vkl_full_net_free(&f->net);
    sdxl_kit_close(&f->k);
}

static float run_loss(void *user)
{
    fixture *f = user;
    return sdxl_kit_loss(&f->k, f->s);
}

static int param_index(const fixture *f, const char *name)
{
    for (int i = 0; i < f->net.n; i++)
        if (!strcmp(f->net.names[i], name)) return i;
    return -1;
}

/* Which weights train: the rule's choice, counted per part. */
static void the_rule_picks_what_reaches_the_loss(fixture *f)
{
    int unet = 0, te[2] = {0, 0}, nw = vkl_weights_count(f->k.w), all_unet = 0;
    for (int i = 0; i < nw; i++) {
        const char *name;
        vkl_weights_at(f->k.w, i, &name);
        all_unet += !strncmp(name, "unet.", 5);
    }
    for (int i = 0; i < f->net.n; i++) {
        const char *n = f->net.names[i];
        if (!strncmp(n, "unet.", 5)) unet++;
        else te[!strncmp(n, "text_encoder_2.", 15)]++;
    }
    print_message("parameters: %d UNet (of %d), %d + %d encoder weights\n", unet, all_unet, te[0], te[1]);
    assert_int_equal(unet, all_unet);
    assert_true(te[0] > 0 && te[1] > 0);
    char name[160];
    int last = f->k.cfg->te[0].layers - 1;
    snprintf(name, sizeof name, "text_encoder.text_model.encoder.layers.%d.mlp.fc1.weight", last);
    assert_int_equal(param_index(f, name), -1); /* after the penultimate layer the UNet reads */
    assert_int_equal(param_index(f, "text_encoder.text_model.final_layer_norm.weight"), -1);
    assert_true(param_index(f, "text_encoder_2.text_model.final_layer_norm.weight") >= 0); /* the pooled path */
    assert_true(param_index(f, "text_encoder_2.text_projection.weight") >= 0);
}

/* The largest gradient element of weights no adapter touches against a
 * central difference of the loss. */
static void other_weights_match_differences(fixture *f)
{
    static const char *names[] = {"text_encoder.text_model.embeddings.token_embedding.weight",
                                  "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight",
                                  "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.weight",
                                  "text_encoder_2.text_model.final_layer_norm.weight",
                                  "text_encoder_2.text_projection.weight",
                                  "unet.add_embedding.linear_1.weight",
                                  "unet.conv_in.weight",
                                  "unet.down_blocks.0.resnets.0.norm1.bias"};
    for (size_t q = 0; q < sizeof names / sizeof *names; q++)
        vkl_test_check_difference(f->k.c, &f->net, f->s, names[q], run_loss, f);
}

static void full_gradients(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    fixture f;
    setup(&f);
    the_rule_picks_what_reaches_the_loss(&f);
    float loss = run_loss(&f);
    int64_t n;
    float *want = vkl_test_ref_f32(VEC, "loss", &n);
    vkl_test_assert_scaled("loss, full network with the encoders in the graph", &loss, want, 1, 1e-4);
    free(want);
    assert_int_equal(vkl_test_check_adapted_weights(f.k.c, VEC, &f.k.lora, &f.net, f.s, 1), 136);
    other_weights_match_differences(&f);
    teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(full_gradients)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* A1111 "parameters" text: exact output for known settings (field order and
 * spelling of create_infotext), parsing of hand-written A1111 texts (as
 * parse_generation_parameters reads them), round trips through the text and
 * through a PNG text chunk. */
#include "vkl_test.h"

#include <stdlib.h>
#include <string.h>

#include "io/image.h"
#include "sd/gen_params.h"

static void format_known_settings(void **state)
{
    (void)state;
    vkl_gen_lora_hash loras[2] = {{"my_style", "abcdef123456"}, {"odd:name,v2", "0123456789ab"}};
    vkl_gen_settings s = {
        .prompt = "a photo of a cat, masterpiece",
        .negative_prompt = "blurry, lowres",
        .steps = 20, .sampler = "Euler a", .schedule_type = "Karras", .cfg_scale = 7.0,
        .seed = 1234, .width = 512, .height = 768,
        .model_hash = "6ce0161689", .model = "v1-5-pruned-emaonly",
        .denoising_strength = -1, .clip_skip = 2,
        .loras = loras, .nloras = 2, .version = "vklora 0.1",
    };
    vkl_gen_params p;
    vkl_err e = {{0}};
    assert_int_equal(vkl_gen_params_from_settings(&s, &p, &e), 0);
    char *text;
    assert_int_equal(vkl_gen_params_format(&p, &text, &e), 0);
    assert_string_equal(text,
        "a photo of a cat, masterpiece\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 1234, "
        "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, "
        "Lora hashes: \"my_style: abcdef123456, oddnamev2: 0123456789ab\", Version: vklora 0.1");
    free(text);
    vkl_gen_params_free(&p);

    /* img2img-like: fractional CFG, denoising, no negative prompt, no schedule */
    vkl_gen_settings t = {.prompt = "x", .steps = 30, .sampler = "DPM++ 2M", .cfg_scale = 7.5,
                          .seed = 4294967295u, .width = 768, .height = 512,
                          .denoising_strength = 0.75, .clip_skip = 1};
    assert_int_equal(vkl_gen_params_from_settings(&t, &p, &e), 0);
    assert_int_equal(vkl_gen_params_format(&p, &text, &e), 0);
    assert_string_equal(text, "x\nSteps: 30, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 4294967295, "
                              "Size: 768x512, Denoising strength: 0.75");
    free(text);
    vkl_gen_params_free(&p);
}

/* The example from A1111's own docstring, plus a 1.10-style text. */
static void parse_a1111_texts(void **state)
{
    (void)state;
    vkl_gen_params p;
    vkl_err e = {{0}};
    const char *doc =
        "girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, "
        "heavy makeup, by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), "
        "detailed, intricate\n"
        "Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, "
        "disfigured, poorly drawn face, mutation, mutated, (extra_limb), (ugly), (poorly drawn "
        "hands), messy drawing\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b\n";
    assert_int_equal(vkl_gen_params_parse(doc, &p, &e), 0);
    assert_string_equal(p.prompt, "girl with an artist's beret, determined, blue eyes, desert scene, "
                                  "computer monitors, heavy makeup, by Alphonse Mucha and Charlie "
                                  "Bowater, ((eyeshadow)), (coquettish), detailed, intricate");
    assert_non_null(strstr(p.negative_prompt, "ugly, fat, obese"));
    assert_non_null(strstr(p.negative_prompt, "messy drawing"));
    assert_int_equal(p.count, 6);
    static const char *keys[6] = {"Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash"};
    static const char *vals[6] = {"20", "Euler a", "7", "965400086", "512x512", "45dee52b"};
    for (int i = 0; i < 6; i++) {
        assert_string_equal(p.keys[i], keys[i]);
        assert_string_equal(p.values[i], vals[i]);
    }
    int w, h;
    assert_int_equal(vkl_gen_params_size(&p, &w, &h), 0);
    assert_int_equal(w, 512);
    assert_int_equal(h, 512);
    vkl_gen_params_free(&p);

    const char *v110 =
        "masterpiece, 1girl,\n<lora:my_style:0.8> watercolor\n"
        "Negative prompt: lowres, bad hands\nextra line of negative\n"
        "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 42, "
        "Size: 832x1216, Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Denoising strength: 0.4, "
        "Clip skip: 2, Hires upscale: 1.5, Hires upscaler: R-ESRGAN 4x+, "
        "Lora hashes: \"my_style: 5e8a2b1c9f3d\", TI hashes: \"bad-hands-5: aa11, easynegative: bb22\", "
        "Emphasis: \"a \\\"quoted\\\" word, caf\\u00e9 \\ud83d\\ude00\", Version: v1.10.1";
    assert_int_equal(vkl_gen_params_parse(v110, &p, &e), 0);
    assert_string_equal(p.prompt, "masterpiece, 1girl,\n<lora:my_style:0.8> watercolor");
    assert_string_equal(p.negative_prompt, "lowres, bad hands\nextra line of negative");
    assert_string_equal(vkl_gen_params_get(&p, "Schedule type"), "Karras");
    assert_string_equal(vkl_gen_params_get(&p, "CFG scale"), "6.5");
    assert_string_equal(vkl_gen_params_get(&p, "Hires upscaler"), "R-ESRGAN 4x+");
    assert_string_equal(vkl_gen_params_get(&p, "Lora hashes"), "my_style: 5e8a2b1c9f3d");
    assert_string_equal(vkl_gen_params_get(&p, "TI hashes"), "bad-hands-5: aa11, easynegative: bb22");
    assert_string_equal(vkl_gen_params_get(&p, "Emphasis"),
                        "a \"quoted\" word, caf\xc3\xa9 \xf0\x9f\x98\x80");
    assert_string_equal(vkl_gen_params_get(&p, "Version"), "v1.10.1");
    assert_int_equal(p.count, 16);
    vkl_gen_params_free(&p);
}

static void parse_edge_cases(void **state)
{
    (void)state;
    vkl_gen_params p;
    vkl_err e = {{0}};
    /* fewer than three pairs on the last line: it is part of the prompt */
    assert_int_equal(vkl_gen_params_parse("a cat\nSteps: 20, Seed: 1", &p, &e), 0);
    assert_string_equal(p.prompt, "a cat\nSteps: 20, Seed: 1");
    assert_int_equal(p.count, 0);
    vkl_gen_params_free(&p);
    /* only parameters */
    assert_int_equal(vkl_gen_params_parse("Steps: 20, Seed: 1, Size: 64x32", &p, &e), 0);
    assert_string_equal(p.prompt, "");
    assert_int_equal(p.count, 3);
    vkl_gen_params_free(&p);
    /* invalid JSON in quotes is kept as written; a quote not followed by ','
     * falls back to the plain value; empty values are values */
    assert_int_equal(vkl_gen_params_parse("p\nAa: \"bad \\x\", Bb: \"x\" y, Cc: , Dd: 4, E: 5", &p, &e), 0);
    assert_int_equal(p.count, 4); /* A1111's keys have two characters at least: E is skipped */
    assert_string_equal(vkl_gen_params_get(&p, "Aa"), "\"bad \\x\"");
    assert_string_equal(vkl_gen_params_get(&p, "Bb"), "\"x\" y");
    assert_string_equal(vkl_gen_params_get(&p, "Cc"), "");
    assert_string_equal(vkl_gen_params_get(&p, "Dd"), "4");
    int w, h;
    assert_int_equal(vkl_gen_params_size(&p, &w, &h), -1);
    vkl_gen_params_free(&p);
    assert_int_equal(vkl_gen_params_parse("", &p, &e), 0);
    assert_string_equal(p.prompt, "");
    vkl_gen_params_free(&p);

    vkl_gen_params_init(&p);
    assert_int_equal(vkl_gen_params_set(&p, "x", "1", &e), -1); /* one character */
    assert_int_equal(vkl_gen_params_set(&p, "Bad:key", "1", &e), -1);
    assert_non_null(strstr(e.msg, "Bad:key"));
    assert_int_equal(vkl_gen_params_set(&p, "Steps", "1", &e), 0);
    assert_int_equal(vkl_gen_params_set(&p, "Steps", "2", &e), 0); /* replaces in place */
    assert_int_equal(p.count, 1);
    assert_string_equal(vkl_gen_params_get(&p, "Steps"), "2");
    vkl_gen_params_free(&p);
}

static void roundtrip(void **state)
{
    (void)state;
    static const char *vals[] = {
        "plain",           "a, b",       "k: v",           "line\nbreak",  "say \"hi\", ok",
        "back\\slash, x",  " padded ",   "\"starts quoted", "tab\there, x", "caf\xc3\xa9, \xe2\x98\x95",
        "ctrl \x01, x",    "",           "20",
    };
    vkl_gen_params p, q;
    vkl_err e = {{0}};
    vkl_gen_params_init(&p);
    assert_int_equal(vkl_gen_params_set_prompts(&p, "multi\nline prompt, (with:1.2)",
                                                "neg one\nneg two", &e), 0);
    char key[32];
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        snprintf(key, sizeof key, "Key %zu", i);
        assert_int_equal(vkl_gen_params_set(&p, key, vals[i], &e), 0);
    }
    char *text;
    assert_int_equal(vkl_gen_params_format(&p, &text, &e), 0);
    assert_int_equal(vkl_gen_params_parse(text, &q, &e), 0);
    assert_string_equal(q.prompt, p.prompt);
    assert_string_equal(q.negative_prompt, p.negative_prompt);
    assert_int_equal(q.count, p.count);
    for (int i = 0; i < p.count; i++) {
        assert_string_equal(q.keys[i], p.keys[i]);
        assert_string_equal(q.values[i], p.values[i]);
    }
    vkl_gen_params_free(&q);

    /* through a PNG tEXt chunk and back */
    const char *dir = vkl_test_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/gen.png", dir);
    uint8_t px[3] = {10, 20, 30};
    vkl_image im = {1, 1, 3, VKL_PIX_U8, px};
    vkl_png_text t = {"parameters", text};
    assert_int_equal(vkl_png_write(path, &im, &t, 1, &e), 0);
    vkl_png_text *rt;
    int n;
    assert_int_equal(vkl_png_read_texts_file(path, &rt, &n, &e), 0);
    const char *back = vkl_png_text_get(rt, n, "parameters");
    assert_non_null(back);
    assert_int_equal(vkl_gen_params_parse(back, &q, &e), 0);
    assert_string_equal(vkl_gen_params_get(&q, "Key 9"), "caf\xc3\xa9, \xe2\x98\x95");
    assert_string_equal(q.negative_prompt, "neg one\nneg two");
    vkl_gen_params_free(&q);
    vkl_png_texts_free(rt, n);
    vkl_test_rmtree(dir);
    free(text);
    vkl_gen_params_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(format_known_settings),
        cmocka_unit_test(parse_a1111_texts),
        cmocka_unit_test(parse_edge_cases),
        cmocka_unit_test(roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

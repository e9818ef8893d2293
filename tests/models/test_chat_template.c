/* Built-in chat templates: the text each renders, written out by hand from
 * the models' Jinja templates (Llama 3's trim, ChatML's default system
 * message, Mistral's alternation rule), and the answer-token flags of a
 * tokenized conversation with a byte-level BPE built here, including a merge
 * across a segment boundary. */
#include "vkl_test.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/hf_bpe.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static char *joined(const vkl_chat_seg *s, int n)
{
    size_t cap = 4096, len = 0;
    char *t = calloc(1, cap);
    for (int i = 0; i < n; i++) {
        const char *p = s[i].kind == VKL_CHAT_BOS ? "<BOS>" : s[i].kind == VKL_CHAT_EOS ? "<EOS>" : s[i].text;
        len += (size_t)snprintf(t + len, cap - len, "%s", p);
    }
    return t;
}

static void render_text(const vkl_chat *c, const vkl_chat_msg *m, int n, int gen, const char *want)
{
    vkl_chat_seg *s = NULL;
    int ns = 0;
    vkl_err e = {{0}};
    if (vkl_chat_render(c, m, n, gen, &s, &ns, &e)) fail_msg("%s", e.msg);
    char *t = joined(s, ns);
    assert_string_equal(t, want);
    free(t);
    vkl_chat_segs_free(s, ns);
}

static void templates(void **state)
{
    (void)state;
    vkl_chat c;
    vkl_err e = {{0}};
    assert_int_equal(vkl_chat_from_template("{{ '<|start_header_id|>' + message['role'] }}...<|eot_id|>", &c, &e), 0);
    assert_int_equal(c.kind, VKL_CHAT_LLAMA3);
    vkl_chat_msg conv[] = {{"system", "Be brief."}, {"user", " Hi \n"}, {"assistant", "Hello!\n"}};
    render_text(&c, conv, 3, 0,
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>");
    render_text(&c, conv + 1, 1, 1,
                "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n");
    /* ChatML with Qwen2's default system message */
    assert_int_equal(vkl_chat_from_template("{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>"
                                            "system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}",
                                            &c, &e), 0);
    assert_int_equal(c.kind, VKL_CHAT_CHATML);
    assert_string_equal(c.default_system, "You are a helpful assistant.");
    vkl_chat_msg qa[] = {{"user", "hi"}, {"assistant", "yo"}};
    render_text(&c, qa, 2, 0,
                "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                "<|im_start|>assistant\nyo<|im_end|>\n");
    render_text(&c, conv, 2, 1,
                "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi \n<|im_end|>\n<|im_start|>assistant\n");
    /* Mistral: BOS, [INST] turns, EOS after answers; roles must alternate */
    assert_int_equal(vkl_chat_from_name("mistral", &c, &e), 0);
    vkl_chat_msg four[] = {{"user", "a"}, {"assistant", "b"}, {"user", "c"}, {"assistant", "d"}};
    render_text(&c, four, 4, 0, "<BOS>[INST] a [/INST]b<EOS>[INST] c [/INST]d<EOS>");
    vkl_chat_seg *s = NULL;
    int ns = 0;
    assert_int_equal(vkl_chat_render(&c, conv, 3, 0, &s, &ns, &e), -1);
    assert_non_null(strstr(e.msg, "alternating"));
    assert_int_equal(vkl_chat_from_name("vicuna", &c, &e), -1);
    assert_non_null(strstr(e.msg, "vicuna"));
    assert_int_equal(vkl_chat_from_template("{{ messages }}", &c, &e), -1);
}

/* ---- tokenizing ---- */

static void byte_char(int b, char *out)
{
    int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    int cp = b, n = 0;
    if (!printable) {
        for (int k = 0; k < b; k++) n += !((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || (k >= 174 && k <= 255));
        cp = 256 + n;
    }
    if (cp < 0x80) out[0] = (char)cp, out[1] = 0;
    else out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
}

enum { BC = 256, IM_START = 300, IM_END = 301 };

static vkl_hfbpe *tokenizer(void)
{
    cJSON *root = cJSON_CreateObject(), *model = cJSON_CreateObject(), *vocab = cJSON_CreateObject();
    char s[8];
    for (int b = 0; b < 256; b++) {
        byte_char(b, s);
        cJSON_AddNumberToObject(vocab, s, b);
    }
    cJSON_AddNumberToObject(vocab, "bc", BC);
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON_AddItemToObject(model, "merges", cJSON_Parse("[\"b c\"]"));
    cJSON_AddItemToObject(root, "model", model);
    cJSON_AddItemToObject(root, "added_tokens",
                          cJSON_Parse("[{\"id\":300,\"content\":\"<|im_start|>\",\"special\":true},"
                                      "{\"id\":301,\"content\":\"<|im_end|>\",\"special\":true}]"));
    cJSON_AddItemToObject(root, "pre_tokenizer", cJSON_Parse("{\"type\":\"ByteLevel\",\"add_prefix_space\":false}"));
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    vkl_hfbpe *t = NULL;
    vkl_err e = {{0}};
    if (vkl_hfbpe_load_text(json, NULL, "chat tokenizer", &t, &e)) fail_msg("%s", e.msg);
    free(json);
    return t;
}

static int encode(void *user, const char *text, int32_t **ids, int *n, vkl_err *e)
{
    return vkl_hfbpe_encode(user, text, 0, ids, n, e);
}

static void expect(const int32_t *ids, const unsigned char *tr, int n, const int32_t *want, const char *want_tr)
{
    assert_int_equal(n, (int)strlen(want_tr));
    for (int i = 0; i < n; i++) {
        if (ids[i] != want[i]) fail_msg("id %d is %d, expected %d", i, ids[i], want[i]);
        if (tr[i] != (want_tr[i] == '1')) fail_msg("id %d (%d) trained %d, expected %c", i, ids[i], tr[i], want_tr[i]);
    }
}

static void answer_tokens(void **state)
{
    (void)state;
    vkl_hfbpe *t = tokenizer();
    vkl_chat c;
    vkl_err e = {{0}};
    assert_int_equal(vkl_chat_from_name("chatml", &c, &e), 0);
    vkl_chat_msg qa[] = {{"user", "hi"}, {"assistant", "yo"}};
    vkl_chat_seg *s = NULL;
    int ns = 0, n = 0;
    assert_int_equal(vkl_chat_render(&c, qa, 2, 0, &s, &ns, &e), 0);
    int32_t *ids = NULL;
    unsigned char *tr = NULL;
    if (vkl_chat_tokenize(s, ns, encode, t, -1, -1, &ids, &tr, &n, &e)) fail_msg("%s", e.msg);
    /* only the answer and its <|im_end|> are trained */
    const int32_t want[] = {IM_START, 'u', 's', 'e', 'r', '\n', 'h', 'i', IM_END, '\n', IM_START, 'a', 's', 's', 'i',
                            's', 't', 'a', 'n', 't', '\n', 'y', 'o', IM_END, '\n'};
    expect(ids, tr, n, want, "0000000000000000000001110");
    free(ids);
    free(tr);
    vkl_chat_segs_free(s, ns);
    /* "ab" + "cd" encode as a, bc, d: the merged token goes with the later (trained) segment */
    char ab[] = "ab", cd[] = "cd";
    vkl_chat_seg two[] = {{VKL_CHAT_BOS, NULL, 0}, {VKL_CHAT_TEXT, ab, 0}, {VKL_CHAT_TEXT, cd, 1}, {VKL_CHAT_EOS, NULL, 1}};
    if (vkl_chat_tokenize(two, 4, encode, t, 7, 8, &ids, &tr, &n, &e)) fail_msg("%s", e.msg);
    expect(ids, tr, n, (const int32_t[]){7, 'a', BC, 'd', 8}, "00111");
    free(ids);
    free(tr);
    assert_int_equal(vkl_chat_tokenize(two, 4, encode, t, -1, 8, &ids, &tr, &n, &e), -1);
    assert_non_null(strstr(e.msg, "BOS"));
    vkl_hfbpe_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(templates), cmocka_unit_test(answer_tokens)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

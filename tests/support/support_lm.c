/* A LLaMA model folder with a Hugging Face byte-level BPE tokenizer.json, for
 * the tests of the paths that read one (lm generate, serve): the refkit's
 * tiny-llama weights (linked), its config.json with the torch_dtype given,
 * and a tokenizer.json whose vocabulary is GPT-2's 256 byte characters plus
 * the merges of "hello" (ids 256-259) and a BOS token <|begin_of_text|>
 * (id 300) put first by its post-processor. "hello hello" encodes to
 * 300 259 32 259. */
#include "vkl_test.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* GPT-2's bytes_to_unicode, from its definition. */
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

void vkl_test_bpe_model_folder(const char *dir, const char *torch_dtype)
{
    char p[1200], q[1200];
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    assert_int_equal(symlink(vkl_test_shared_path("refkit/lm/tiny-llama/model.safetensors"), p), 0);
    char *cfg = vkl_test_slurp(vkl_test_shared_path("refkit/lm/tiny-llama"), "config.json");
    assert_non_null(cfg);
    char *at = strstr(cfg, "\"float32\"");
    assert_non_null(at);
    snprintf(q, sizeof q, "%s/config.json", dir);
    FILE *cf = fopen(q, "wb");
    assert_non_null(cf);
    fprintf(cf, "%.*s\"%s\"%s", (int)(at - cfg), cfg, torch_dtype, at + strlen("\"float32\""));
    fclose(cf);
    free(cfg);
    cJSON *root = cJSON_CreateObject(), *model = cJSON_CreateObject(), *vocab = cJSON_CreateObject();
    cJSON *merges = cJSON_CreateArray();
    char s[16];
    for (int b = 0; b < 256; b++) {
        byte_char(b, s);
        cJSON_AddNumberToObject(vocab, s, b);
    }
    const char *m[][2] = {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}};
    for (int i = 0; i < 4; i++) {
        char cat[16], pair[16];
        snprintf(cat, sizeof cat, "%s%s", m[i][0], m[i][1]);
        snprintf(pair, sizeof pair, "%s %s", m[i][0], m[i][1]);
        cJSON_AddNumberToObject(vocab, cat, 256 + i);
        cJSON_AddItemToArray(merges, cJSON_CreateString(pair));
    }
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON_AddItemToObject(model, "merges", merges);
    cJSON_AddItemToObject(root, "model", model);
    cJSON_AddItemToObject(root, "added_tokens",
                          cJSON_Parse("[{\"id\":300,\"content\":\"<|begin_of_text|>\",\"special\":true}]"));
    cJSON_AddItemToObject(root, "pre_tokenizer", cJSON_Parse("{\"type\":\"ByteLevel\",\"add_prefix_space\":false}"));
    cJSON_AddItemToObject(root, "post_processor",
                          cJSON_Parse("{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":"
                                      "\"<|begin_of_text|>\"}},{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{"
                                      "\"<|begin_of_text|>\":{\"ids\":[300]}}}"));
    char *text = cJSON_PrintUnformatted(root);
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(text);
    cJSON_Delete(root);
}

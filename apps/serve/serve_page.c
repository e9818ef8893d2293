/* GET /: the web page (apps/serve/page/index.html, embedded at build time by
 * cmake/embed.cmake: one self-contained file, no CDN, no build step). */
#include "serve/serve.h"

#include <stdlib.h>
#include <string.h>

extern const unsigned char vkl_serve_page_html[];
extern const size_t vkl_serve_page_html_size;

int serve_page(vkl_server *s, const serve_req *q, serve_resp *r)
{
    (void)s, (void)q;
    char *b = malloc(vkl_serve_page_html_size + 1);
    if (!b) return serve_error(r, 500, "Internal Server Error", "out of host memory");
    memcpy(b, vkl_serve_page_html, vkl_serve_page_html_size + 1);
    r->status = 200;
    r->body = b;
    r->len = vkl_serve_page_html_size;
    r->type = "text/html; charset=utf-8";
    return 0;
}

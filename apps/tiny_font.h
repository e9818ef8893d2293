/* A 3x5-pixel bitmap font for numbers and a few words on images made without
 * a font library (grid labels, loss-curve axes). */
#ifndef VKL_TINY_FONT_H
#define VKL_TINY_FONT_H

#include <stddef.h>
#include <stdint.h>

/* Draws s into an RGB u8 image W x H at (x, y), each font pixel scale x
 * scale, in colour rgb; clipped at the edges. Digits, '.', '-', '+', ':',
 * and the letters of "STEP", "LOSS" and 'e' (exponents) are drawn, other
 * characters leave a gap. Characters advance 4 * scale pixels. */
void vkl_tiny_text(uint8_t *px, int W, int H, int x, int y, int scale, const char *s, const uint8_t rgb[3]);
/* The width in pixels of s at scale. */
int vkl_tiny_text_width(const char *s, int scale);

#endif

// erf in fp32, shared by the exact-GELU users (unary.comp, glu.comp).
float erf_approx(float x) {
    // Abramowitz-Stegun 7.1.26 is too coarse (1.5e-7 abs is fine, but its relative
    // error near 0 is not): use the erf of the exact-GELU form via a rational
    // approximation with max abs error ~1.2e-7 (W. J. Cody style, float32).
    float a = abs(x);
    float t = 1.0 / (1.0 + 0.5 * a);
    float y = t * exp(-a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
              t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
              t * (-0.82215223 + t * 0.17087277)))))))));
    return sign(x) * (1.0 - y);
}

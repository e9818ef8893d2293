// exp, sin/cos and division to about 1 ulp in fp32, independent of the
// driver's builtins: Vulkan allows exp 3+2|x| ulp, division 2.5 ulp and sin an
// absolute error of 2^-11, and does not promise that fma() is fused. Only
// correctly rounded adds and multiplies (which Vulkan does promise) are relied
// on. Used where results must match PyTorch's float32 values closely:
// timestep embeddings and rotary angles reach thousands of radians.
// `precise` keeps the compiler from contracting or re-associating the steps.

// a * b = p + err exactly (Veltkamp split, Dekker product).
void two_prod(float a, float b, out float p, out float err) {
    precise float pp = a * b;
    precise float ca = 4097.0 * a;
    precise float ah = ca - (ca - a);
    precise float al = a - ah;
    precise float cb = 4097.0 * b;
    precise float bh = cb - (cb - b);
    precise float bl = b - bh;
    precise float e = ((ah * bh - pp) + ah * bl + al * bh) + al * bl;
    p = pp;
    err = e;
}

// a / b, correctly rounded in nearly all cases: one correction step on the
// builtin quotient with an exact residual.
float div_precise(float a, float b) {
    precise float q = a / b;
    float p, err;
    two_prod(q, b, p, err);
    precise float r = (a - p) - err;
    precise float q2 = q + r / b;
    return q2;
}

// a + b = s + err exactly (Knuth's two-sum).
void two_sum(float a, float b, out float s, out float err) {
    precise float ss = a + b;
    precise float bb = ss - a;
    precise float e = (a - (ss - bb)) + (b - bb);
    s = ss;
    err = e;
}

// exp(hi + lo) for a float-float argument (|lo| << |hi|). x = k ln2 + r with
// ln2 in three parts (k * 0.693359375 exact), r kept as a float-float, the
// Cephes expf polynomial for exp(r) - 1 - r, and 1 + r + ... summed so that
// only the last addition rounds noticeably: the result is correctly rounded
// except very near a rounding midpoint (as PyTorch's own exp).
float exp_ff(float hi, float lo) {
    if (hi > 88.72) return 1.0 / 0.0;
    if (hi < -103.9) return 0.0;
    precise float k = floor(hi * 1.44269504088896341 + 0.5);
    precise float r1 = hi - k * 0.693359375;
    float p2, e2, rh, rl;
    two_prod(k, -0.00021219444170128554, p2, e2);
    two_sum(r1, -p2, rh, rl);
    precise float rlo = ((rl - e2) - k * 1.6465949697480609e-12) + lo;
    float z = rh * rh;
    float poly = (((((1.9875691500e-4 * rh + 1.3981999507e-3) * rh + 8.3334519073e-3) * rh + 4.1665795894e-2) * rh +
                   1.6666665459e-1) * rh + 5.0000001201e-1) * z;
    float sh, sl;
    two_sum(1.0, rh, sh, sl);
    precise float tail = sl + (poly + rlo * (1.0 + rh));
    precise float res = sh + tail;
    int ki = int(k);
    return ldexp(ldexp(res, ki / 2), ki - ki / 2);   // two steps: 2^k alone may overflow
}

float exp_precise(float x) { return exp_ff(x, 0.0); }

// sin and cos of x: r = x - j pi/2 with pi/2 in four parts, the first three
// of 7 significant bits so that j * part and the first subtractions are exact
// for |x| < 2^17 pi/2 (~205000 radians); Cephes polynomials on [-pi/4, pi/4].
void sincos_precise(float x, out float s, out float c) {
    precise float j = floor(x * 0.6366197466850281 + 0.5);
    precise float r = x - j * 1.5625;
    r = r - j * 0.0081787109375;
    r = r - j * 0.00011730194091796875;
    r = r - j * 3.1391647326017846e-07;
    float z = r * r;
    float ps = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
    float pc = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
    int q = int(j) & 3;
    if (q == 0) { s = ps; c = pc; }
    else if (q == 1) { s = pc; c = -ps; }
    else if (q == 2) { s = -ps; c = -pc; }
    else { s = -pc; c = ps; }
}

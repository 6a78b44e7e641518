/* Optional compiled kernels of ParamSeal (loaded with ctypes by _native.py). Each kernel's
 * comment names the numba/numpy reference it mirrors; tests/test_native.py compares the two.
 *
 * First, the irs4 inner encoder with GFNI + AVX-512: the numba encoder in _irs_kernels.py is the reference
 * (ps_encode_tab below, the same tables in C, serves other CPUs), and the outputs are compared bit
 * for bit in tests/test_native.py.
 *
 * Per group (255 words = 1020 bytes), in four steps:
 *  1. each 64-byte chunk is mapped into GF(2^8) mod 0x11b (gf2p8mulb's field) by the field
 *     isomorphism phi (one affine op), then permuted so that lanes 16t..16t+15 hold codeword t;
 *  2. syndrome i of every codeword at once: XOR over chunks of gf2p8mulb(chunk, powers), then a
 *     fold of each 128-bit lane to its byte 0;
 *  3. the free bits: a GF(2) matrix (the parity solver composed with phi^-1) applied to the
 *     syndrome bits, by table lookup per syndrome nibble (Four Russians);
 *  4. the free bytes are ORed into their words (they are zero on entry), by byte permutes.
 * All tables are built in Python (_gfni_plan.py) from the same code description the numba
 * encoder uses.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <fcntl.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define X86 1
#endif

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vbmi,gfni")))
#define GROUP_BYTES 1020
#define MAX_D 128
#define MAX_ROW 128
#define PF_ROWS 64 /* how far ahead (rows, 16 to a line) the strata movers prefetch */
#define PF_PAD 8   /* how far ahead (groups) they prefetch the keyed offset's rows */

/* The 1020 bytes of one group's row (16 lines). */
static inline void prefetch_row(const uint32_t *row)
{
    for (int c = 0; c < 16; c++)
        __builtin_prefetch(row + 16 * c, 0, 3);
}

/* The keyed offset's rows, from an array or made from the key as they are needed, PAD_ROWS groups at a
 * time into ring (in L1): a 16 MiB array a superblock was written by one pass and read by two, the gather's
 * and the placement's, each a pass over the superblock's 16 MiB. Row r (group g0 + r) of pad, or at
 * ring + o + 255 (r - r0). */
#define PAD_ROWS 16
typedef struct {
    const uint32_t *pad; /* [rows][255], or NULL: made from the key (ps_aes256_ctr's keystream) */
    int64_t g0, r0;      /* row 0's group; the first row in ring (-1: none yet) */
    int o;               /* the word of ring where row r0 starts */
    uint8_t rk[15 * 16]; /* the key's round keys (pad_clear wipes them and ring) */
    uint32_t ring[4096] __attribute__((aligned(64))); /* 256 x 4 AES blocks: o + 255 PAD_ROWS words, o < 4 */
} pad_src;
_Static_assert(255 * PAD_ROWS + 3 <= 4096, "pad_src's ring holds PAD_ROWS rows");

static void pad_refill(pad_src *ps, int64_t r);

/* ps with pad (key NULL), or made from key (pad NULL): 0, or -1 where this CPU lacks VAES. */
static int pad_init(pad_src *ps, const uint32_t *pad, const uint8_t *key, int64_t g0);

/* No round key or keystream left on the stack (as aes_ctr_vaes leaves none). */
static void pad_clear(pad_src *ps)
{
    if (ps->pad != NULL)
        return;
    memset(ps->rk, 0, sizeof ps->rk);
    memset(ps->ring, 0, sizeof ps->ring);
    __asm__ volatile("" : : "m"(*ps) : "memory"); /* the clearing is not optimised away */
}

static inline const uint32_t *pad_row(pad_src *ps, int64_t r)
{
    if (ps->pad != NULL)
        return ps->pad + r * 255;
    if (ps->r0 < 0 || r < ps->r0 || r >= ps->r0 + PAD_ROWS)
        pad_refill(ps, r);
    return ps->ring + ps->o + (r - ps->r0) * 255;
}

/* An array's row r + PF_PAD (made rows need none: they are in L1). */
static inline void prefetch_pad(const pad_src *ps, int64_t r)
{
    if (ps->pad != NULL)
        prefetch_row(ps->pad + (r + PF_PAD) * 255);
}

/* The gather's source lines PF_ROWS rows on, for sources off[16 (r mod 16) ...] (n of them, word offsets
 * from lo; negative: none): 255 streams, more than the prefetchers follow, and 16 a row, as all 255 every
 * 16 rows filled the line buffers. */
static inline void prefetch_sources(const uint32_t *lo, const int32_t *off, int n, int64_t r)
{
    const int64_t line = (r & ~(int64_t)15) + PF_ROWS;
    for (int j = 16 * (int)(r & 15); j < 16 * (int)(r & 15) + 16 && j < n; j++)
        if (off[j] >= 0)
            __builtin_prefetch(lo + off[j] + line, 0, 3);
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the kernels read packed words as little-endian bytes; ParamSeal runs numba's instead"
#endif

#ifndef PS_SRC_HASH
#define PS_SRC_HASH "" /* hatch_build.py passes the first 16 hex digits of this file's SHA-256 */
#endif

int ps_abi(void) { return 7; }

const char *ps_src_hash(void) { return PS_SRC_HASH; }

int ps_gfni(void)
{
#ifdef X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("gfni");
#else
    return 0; /* the coding kernels below are x86 only; callers use numba */
#endif
}

#ifdef X86

/* Chunk c (64 bytes) of group G; the last (c = 15) stops at the group's 1020th byte. */
TARGET static inline __attribute__((always_inline)) __m512i load_chunk(const uint8_t *G, int c)
{
    const __mmask64 tail = (((__mmask64)1) << (GROUP_BYTES - 960)) - 1;
    return c < 15 ? _mm512_loadu_si512((const void *)(G + 64 * c)) : _mm512_maskz_loadu_epi8(tail, G + 960);
}

/* Chunk c (64 bytes) of group G, masked with keep or (flags) with its fixed bytes zeroed (see
 * quad_syndromes), mapped into gf2p8mulb's field (phi) and its lanes grouped by codeword (perm). */
TARGET static inline __attribute__((always_inline)) __m512i group_chunk(const uint8_t *G, const uint8_t *keep,
                                                                        const uint8_t *flags, int c, __m512i idx, __m512i A)
{
    static const uint8_t spread_ix[64] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5,
                                          5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10,
                                          11, 11, 11, 11, 12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15};
    static const uint8_t bit_ix[64] = {1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2,
                                       4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8,
                                       1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8};
    __m512i x = load_chunk(G, c);
    if (keep)
        x = _mm512_and_si512(x, _mm512_loadu_si512((const void *)(keep + 64 * c)));
    if (flags) {
        __m512i f = _mm512_maskz_loadu_epi8(c < 15 ? 0xFFFF : 0x7FFF, flags + 16 * c);
        __mmask64 fixed = _mm512_test_epi8_mask(_mm512_permutexvar_epi8(_mm512_loadu_si512(spread_ix), f),
                                                _mm512_loadu_si512(bit_ix));
        x = _mm512_maskz_mov_epi8(~fixed, x);
    }
    return _mm512_permutexvar_epi8(idx, _mm512_gf2p8affine_epi64_epi8(x, A, 0));
}

/* group_chunk without the lane permute: chunk c of G masked with keep and mapped by phi, bytes in place. */
TARGET static inline __attribute__((always_inline)) __m512i raw_chunk(const uint8_t *G, const uint8_t *keep, int c, __m512i A)
{
    const __m512i x = _mm512_and_si512(load_chunk(G, c), _mm512_loadu_si512((const void *)(keep + 64 * c)));
    return _mm512_gf2p8affine_epi64_epi8(x, A, 0);
}

/* Where quad_syndromes puts syndrome i of codeword t. */
#define SYN(i, t) (64 * ((i) >> 4) + 16 * (t) + ((i) & 15))

/* XOR of the interleaved halves of a and b at width w bits: one step of reduce16. */
#define HALVES(w, a, b) _mm512_xor_si512(_mm512_unpacklo_epi##w(a, b), _mm512_unpackhi_epi##w(a, b))

/* 16 vectors of 4 codeword lanes -> one whose lane t byte k is the XOR of the 16 bytes of lane t of
 * v[k]: 45 shuffles and XORs, where folding each vector alone took 8 (128 for the 16). */
TARGET static inline __attribute__((always_inline)) __m512i reduce16(const __m512i *v)
{
    __m512i b[8], c[4];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++)
        b[k] = HALVES(8, v[2 * k], v[2 * k + 1]);
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++)
        c[k] = HALVES(16, b[2 * k], b[2 * k + 1]);
    return HALVES(64, HALVES(32, c[0], c[1]), HALVES(32, c[2], c[3]));
}

/* The groups g0 .. g0 + 3 of W (ng groups), a zero group standing in for those past ng. */
static inline void quad_groups(const uint8_t *W, int64_t g0, int64_t ng, const uint8_t **G)
{
    static const uint8_t zero[1024] __attribute__((aligned(64)));
    for (int u = 0; u < 4; u++)
        G[u] = g0 + u < ng ? W + (g0 + u) * GROUP_BYTES : zero;
}

/* Steps 1 and 2 for four groups G[u]: R[u][SYN(i, t)] = syndrome i of codeword t (phi-domain, or mapped
 * back with phi_inv when back), zero for dmax <= i < 16 ceil(dmax / 16). Bytes are masked with keep
 * (1024 bytes) or, with flags F[u] (255 bytes each), the bytes flagged fixed (flag bits 0-3) count as
 * zero. The four groups take a quarter of their chunks at a time, so that each syndrome power loaded
 * serves four groups and the powers in use (SYN_BLOCK syndromes of a quarter, 8 KiB) stay in L1: the
 * whole table (dmax KiB, 62 at k = 8) does not fit there, and reading it from L2 for each group took
 * as long again as the products. The encoder (keep given) multiplies a quarter whose free bytes cmask marks
 * as 3 vectors instead of 4: those bytes are zero, and cidx gathers the rest, codeword by 128-bit lane, from
 * two neighbouring chunks each (cpow: their powers; _gfni_plan._compact). */
#define SYN_BLOCK 32
TARGET static inline __attribute__((always_inline)) void quad_syndromes(const uint8_t *const *G, const uint8_t *keep,
                                                                        const uint8_t *const *F, const uint8_t *powers,
                                                                        int dmax, const uint8_t *perm, uint64_t phi,
                                                                        uint64_t phi_inv, int back, uint8_t *const *R,
                                                                        const uint8_t *cidx, const uint8_t *cpow, int cmask)
{
    const __m512i idx = _mm512_loadu_si512((const void *)perm);
    const __m512i A = _mm512_set1_epi64((long long)phi), Ai = _mm512_set1_epi64((long long)phi_inv);
    __m512i U[4][SYN_BLOCK] __attribute__((aligned(64))); /* unfolded sums, one vector per group and syndrome */
    for (int i0 = 0; i0 < dmax; i0 += SYN_BLOCK) {
        const int n = dmax - i0 < SYN_BLOCK ? dmax - i0 : SYN_BLOCK;
        for (int q = 0; q < 4; q++) {
            if (keep && (cmask >> q & 1)) { /* the free bytes dropped: 3 vectors a quarter (_gfni_plan._compact) */
                __m512i Y[4][3];
                const __m512i c0 = _mm512_loadu_si512((const void *)(cidx + 192 * q));
                const __m512i c1 = _mm512_loadu_si512((const void *)(cidx + 192 * q + 64));
                const __m512i c2 = _mm512_loadu_si512((const void *)(cidx + 192 * q + 128));
#pragma GCC unroll 4
                for (int u = 0; u < 4; u++) {
                    const __m512i r0 = raw_chunk(G[u], keep, 4 * q, A), r1 = raw_chunk(G[u], keep, 4 * q + 1, A);
                    const __m512i r2 = raw_chunk(G[u], keep, 4 * q + 2, A), r3 = raw_chunk(G[u], keep, 4 * q + 3, A);
                    Y[u][0] = _mm512_permutex2var_epi8(r0, c0, r1);
                    Y[u][1] = _mm512_permutex2var_epi8(r1, c1, r2);
                    Y[u][2] = _mm512_permutex2var_epi8(r2, c2, r3);
                }
                for (int i = 0; i < n; i++) {
                    const uint8_t *p = cpow + ((size_t)(i0 + i) * 4 + q) * 192;
                    const __m512i P0 = _mm512_loadu_si512((const void *)p), P1 = _mm512_loadu_si512((const void *)(p + 64));
                    const __m512i P2 = _mm512_loadu_si512((const void *)(p + 128));
#pragma GCC unroll 4
                    for (int u = 0; u < 4; u++) {
                        __m512i a = _mm512_ternarylogic_epi32(_mm512_gf2p8mul_epi8(Y[u][0], P0), _mm512_gf2p8mul_epi8(Y[u][1], P1),
                                                              _mm512_gf2p8mul_epi8(Y[u][2], P2), 0x96);
                        U[u][i] = q ? _mm512_xor_si512(a, U[u][i]) : a;
                    }
                }
                continue;
            }
            __m512i X[4][4];
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++)
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++)
                    X[u][c] = group_chunk(G[u], keep, F[u], 4 * q + c, idx, A);
            for (int i = 0; i < n; i++) {
                const uint8_t *p = powers + (size_t)(i0 + i) * 16 * 64 + 256 * q;
                const __m512i P0 = _mm512_loadu_si512((const void *)p), P1 = _mm512_loadu_si512((const void *)(p + 64));
                const __m512i P2 = _mm512_loadu_si512((const void *)(p + 128)), P3 = _mm512_loadu_si512((const void *)(p + 192));
#pragma GCC unroll 4
                for (int u = 0; u < 4; u++) {
                    __m512i a = _mm512_ternarylogic_epi32(_mm512_gf2p8mul_epi8(X[u][0], P0), _mm512_gf2p8mul_epi8(X[u][1], P1),
                                                          _mm512_gf2p8mul_epi8(X[u][2], P2), 0x96);
                    __m512i b = _mm512_gf2p8mul_epi8(X[u][3], P3);
                    U[u][i] = q ? _mm512_ternarylogic_epi32(a, b, U[u][i], 0x96) : _mm512_xor_si512(a, b);
                }
            }
        }
        for (int u = 0; u < 4; u++) {
            for (int i = n; i < 16 * ((n + 15) / 16); i++)
                U[u][i] = _mm512_setzero_si512();
            for (int h = 0; 16 * h < n; h++) {
                __m512i s = reduce16(&U[u][16 * h]);
                _mm512_store_si512((void *)(R[u] + 4 * i0 + 64 * h), back ? _mm512_gf2p8affine_epi64_epi8(s, Ai, 0) : s);
            }
        }
    }
}

/* Step 3 where the solver is GF(2^8)-linear in each syndrome byte (the free bits are whole bytes, as
 * at k = 8 and 16): the free bytes of codeword t are phi^-1(sum_i S_i * cols[t][i]) in gf2p8mulb's
 * field, one multiply per syndrome from a small table instead of two rows of the nibble tables. The
 * syndromes are taken 16 at a time (SYN's runs, fixed offsets) into 4 sums: one loop computing SYN
 * each step into one sum took 2.5 times as long (k = 8, this step alone, on a GFNI Xeon). */
TARGET static inline __attribute__((always_inline)) void free_bytes_gf(const uint8_t *R, int t, int dt, const uint8_t *cols,
                                                                       int dmax, int rowbytes, __m512i Ai, uint8_t *out)
{
    const uint8_t *c = cols + (size_t)t * dmax * rowbytes;
    __m512i o[2][4];
    for (int a = 0; a < 8; a++)
        o[a >> 2][a & 3] = _mm512_setzero_si512();
    for (int i0 = 0; i0 < dt; i0 += 16) {
        const uint8_t *r = R + SYN(i0, t), *ci = c + (size_t)i0 * rowbytes;
        const int n = dt - i0 < 16 ? dt - i0 : 16;
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) {
            if (i >= n)
                break;
            const __m512i s = _mm512_set1_epi8((char)r[i]);
            const uint8_t *row = ci + (size_t)i * rowbytes;
            o[0][i & 3] = _mm512_xor_si512(o[0][i & 3], _mm512_gf2p8mul_epi8(s, _mm512_loadu_si512((const void *)row)));
            if (rowbytes == 128)
                o[1][i & 3] = _mm512_xor_si512(o[1][i & 3], _mm512_gf2p8mul_epi8(s, _mm512_loadu_si512((const void *)(row + 64))));
        }
    }
    for (int h = 0; h < rowbytes / 64; h++) {
        const __m512i x = _mm512_xor_si512(_mm512_ternarylogic_epi32(o[h][0], o[h][1], o[h][2], 0x96), o[h][3]);
        _mm512_store_si512((void *)(out + 64 * h), _mm512_gf2p8affine_epi64_epi8(x, Ai, 0));
    }
}

/* Step 3 for any code: the free bytes of codeword t from the nibble tables (Four Russians), for
 * ENC_BATCH groups at once (R[u]: their syndromes, out[u]: their free bytes). Each syndrome's rows
 * (4 KiB at rowbytes 128) serve every group of the batch from L1 while the sums stay in registers:
 * the tables (1.5 MiB at k = 12) live in L2, and one group at a time read them from there. */
#define ENC_BATCH 8
TARGET static inline __attribute__((always_inline)) void free_bytes_tab(const uint8_t *const *R, int t, int dt, const uint8_t *tabs,
                                                                        int dmax, int rowbytes, uint8_t *const *out)
{
    const size_t plane = (size_t)16 * rowbytes; /* the 16 rows of one nibble of one syndrome */
    const uint8_t *tab = tabs + (size_t)t * 2 * dmax * plane;
    __m512i o[ENC_BATCH][2];
    for (int u = 0; u < ENC_BATCH; u++)
        o[u][0] = o[u][1] = _mm512_setzero_si512();
    for (int i = 0; i < dt; i++) {
        const uint8_t *lo = tab + 2 * (size_t)i * plane, *hi = lo + plane;
        const int at = SYN(i, t);
#pragma GCC unroll 8
        for (int u = 0; u < ENC_BATCH; u++) {
            const unsigned s = R[u][at];
            const uint8_t *a = lo + (s & 15) * (size_t)rowbytes, *b = hi + (s >> 4) * (size_t)rowbytes;
            for (int h = 0; h < rowbytes / 64; h++)
                o[u][h] = _mm512_ternarylogic_epi32(o[u][h], _mm512_loadu_si512((const void *)(a + 64 * h)),
                                                    _mm512_loadu_si512((const void *)(b + 64 * h)), 0x96);
        }
    }
    for (int u = 0; u < ENC_BATCH; u++)
        for (int h = 0; h < rowbytes / 64; h++)
            _mm512_store_si512((void *)(out[u] + MAX_ROW * t + 64 * h), o[u][h]);
}

/* Step 4: OR the free bytes of the 4 codewords (U: [4][128], codeword t's free byte e at 128 t + e)
 * into their places in group G, a 64-byte chunk at a time: byte b of chunk c takes U[spread[c][b]]
 * where bit b of masks[c][2] is set (two 2-source byte permutes per pair of codewords, then blends
 * on bits 7 and 8 of the source index, held in masks[c][0] and masks[c][1]). */
TARGET static inline __attribute__((always_inline)) void place_free_bytes(uint8_t *G, const uint8_t *U, const uint8_t *spread,
                                                                          const uint64_t *masks)
{
    const __m512i u0a = _mm512_load_si512((const void *)U), u0b = _mm512_load_si512((const void *)(U + 64));
    const __m512i u1a = _mm512_load_si512((const void *)(U + 128)), u1b = _mm512_load_si512((const void *)(U + 192));
    const __m512i u2a = _mm512_load_si512((const void *)(U + 256)), u2b = _mm512_load_si512((const void *)(U + 320));
    const __m512i u3a = _mm512_load_si512((const void *)(U + 384)), u3b = _mm512_load_si512((const void *)(U + 448));
    for (int c = 0; c < 16; c++) {
        const uint64_t *m = masks + 3 * c;
        if (!m[2])
            continue;
        const __m512i ix = _mm512_loadu_si512((const void *)(spread + 64 * c));
        __m512i r01 = _mm512_mask_blend_epi8(m[0], _mm512_permutex2var_epi8(u0a, ix, u0b), _mm512_permutex2var_epi8(u1a, ix, u1b));
        __m512i r23 = _mm512_mask_blend_epi8(m[0], _mm512_permutex2var_epi8(u2a, ix, u2b), _mm512_permutex2var_epi8(u3a, ix, u3b));
        __m512i x = _mm512_maskz_loadu_epi8(m[2], G + 64 * c); /* masked: the last chunk ends 4 bytes past the group */
        _mm512_mask_storeu_epi8(G + 64 * c, m[2], _mm512_or_si512(x, _mm512_mask_blend_epi8(m[1], r01, r23)));
    }
}

/* W: ng groups of 1020 bytes, updated in place (free bits zero on entry).
 * powers: [dmax][16][64] syndrome powers, phi-domain, permuted lanes (0 where i >= d_t).
 * perm: 64 lane indices (vpermb) that group each chunk's bytes by codeword.
 * keep: 1024 bytes, the bits of a group the code reads (free bits 0: ignored, as the numba encoder does).
 * phi: the affine matrix of phi.
 * tabs: [4][2 dmax][16][rowbytes] rows of free-byte images per syndrome nibble value.
 * cols: NULL, or [4][dmax][rowbytes] phi-domain columns where the solver is GF(2^8)-linear (then
 * used instead of tabs, with phi_inv mapping back).
 * d: [4] syndromes per codeword; rowbytes: 64 or 128 (free bytes per codeword, at most).
 * spread, masks: where each free byte goes in the group (see place_free_bytes).
 * cidx, cpow, cmask: the quarters whose syndromes skip the free bytes (_gfni_plan._compact; cmask 0: none). */
TARGET int ps_irs_encode(uint8_t *W, int64_t ng, const uint8_t *powers, int dmax, const uint8_t *perm,
                         const uint8_t *keep, uint64_t phi, const uint8_t *tabs, const int32_t *d, int rowbytes,
                         const uint8_t *spread, const uint64_t *masks, const uint8_t *cols, uint64_t phi_inv,
                         const uint8_t *cidx, const uint8_t *cpow, int cmask)
{
    if (dmax < 1 || dmax > MAX_D || (rowbytes != 64 && rowbytes != 128))
        return -1;
    uint8_t R[ENC_BATCH][MAX_D * 4] __attribute__((aligned(64)));
    uint8_t U[ENC_BATCH][4 * MAX_ROW] __attribute__((aligned(64)));
    uint8_t *Rp[ENC_BATCH], *Up[ENC_BATCH];
    for (int u = 0; u < ENC_BATCH; u++)
        Rp[u] = R[u], Up[u] = U[u];
    memset(U, 0, sizeof U);
    const __m512i Ai = _mm512_set1_epi64((long long)phi_inv);
    const uint8_t *const nof[4] = {NULL, NULL, NULL, NULL};
    for (int64_t g0 = 0; g0 < ng; g0 += ENC_BATCH) {
        for (int q = 0; q < ENC_BATCH; q += 4) { /* groups past ng: zero groups, their free bytes unused */
            const uint8_t *Gq[4];
            quad_groups(W, g0 + q, ng, Gq);
            quad_syndromes(Gq, keep, nof, powers, dmax, perm, phi, 0, 0, Rp + q, cidx, cpow, cmask);
        }
        for (int t = 0; t < 4 && !cols; t++) {
            if (rowbytes == 64)
                free_bytes_tab((const uint8_t *const *)Rp, t, d[t], tabs, dmax, 64, Up);
            else
                free_bytes_tab((const uint8_t *const *)Rp, t, d[t], tabs, dmax, 128, Up);
        }
        for (int64_t g = g0; g < g0 + ENC_BATCH && g < ng; g++) {
            const int u = (int)(g - g0);
            for (int t = 0; t < 4 && cols; t++) {
                if (rowbytes == 64)
                    free_bytes_gf(R[u], t, d[t], cols, dmax, 64, Ai, U[u] + MAX_ROW * t);
                else
                    free_bytes_gf(R[u], t, d[t], cols, dmax, 128, Ai, U[u] + MAX_ROW * t);
            }
            place_free_bytes(W + g * GROUP_BYTES, U[u], spread, masks);
        }
    }
    return 0;
}

/* The encoder as one GF(2)-linear map (ps_irs_encode_affine): chunk c of 8 groups G[u], masked with keep,
 * as 64 qwords X[pos[b]] holding byte b of the 8 groups (group u in byte u): three unpack stages, whose
 * order of the 64 columns pos gives (transpose8_pos). */
TARGET static inline __attribute__((always_inline)) void transpose8(const __m512i *r, uint64_t *X)
{
    __m512i a[8], b[8];
    for (int u = 0; u < 4; u++) {
        a[2 * u] = _mm512_unpacklo_epi8(r[2 * u], r[2 * u + 1]);
        a[2 * u + 1] = _mm512_unpackhi_epi8(r[2 * u], r[2 * u + 1]);
    }
    for (int h = 0; h < 2; h++)
        for (int v = 0; v < 2; v++) {
            b[4 * h + 2 * v] = _mm512_unpacklo_epi16(a[4 * h + v], a[4 * h + v + 2]);
            b[4 * h + 2 * v + 1] = _mm512_unpackhi_epi16(a[4 * h + v], a[4 * h + v + 2]);
        }
    for (int v = 0; v < 4; v++) {
        _mm512_store_si512((void *)(X + 16 * v), _mm512_unpacklo_epi32(b[v], b[v + 4]));
        _mm512_store_si512((void *)(X + 16 * v + 8), _mm512_unpackhi_epi32(b[v], b[v + 4]));
    }
}

/* pos[b]: the qword of transpose8's output that holds column b. */
TARGET static void transpose8_pos(int16_t *pos)
{
    uint8_t iota[64] __attribute__((aligned(64)));
    uint64_t X[64] __attribute__((aligned(64)));
    __m512i r[8];
    for (int b = 0; b < 64; b++)
        iota[b] = (uint8_t)b;
    for (int u = 0; u < 8; u++)
        r[u] = _mm512_load_si512((const void *)iota);
    transpose8(r, X);
    for (int q = 0; q < 64; q++)
        pos[X[q] & 0xFF] = (int16_t)q;
}

/* One codeword's free bytes for 32 groups (X[h]: groups 8 h .. 8 h + 7, as transpose8 lays them out): block
 * e of 8 free bytes (qword L: free byte 8 e + L, group u in byte u) is the XOR over the ns read bytes s of
 * M[s][e] * X[h][src[s]], M 8x8 bit matrices (gf2p8affineqb, one per qword; nb blocks a read byte). 4 blocks
 * a pass, so that the 16 sums stay in registers and each matrix loaded serves 32 groups: the matrices
 * (400 KiB at k = 8, in L2) took as long to read as the products with 8 groups a load. Each group's bytes
 * then go to U[u] + 128 t. Each step also prefetches the line at *pf (advanced, up to pf_end): the next
 * 32 groups'. */
TARGET static inline __attribute__((always_inline)) void affine_sums(const uint64_t (*X)[16 * 64], const int16_t *src,
                                                                     int ns, const uint64_t *M, int nb, int t,
                                                                     uint8_t (*U)[4 * MAX_ROW], const char **pf,
                                                                     const char *pf_end)
{
    static const uint8_t tr[64] = {0, 8,  16, 24, 32, 40, 48, 56, 1, 9,  17, 25, 33, 41, 49, 57,
                                   2, 10, 18, 26, 34, 42, 50, 58, 3, 11, 19, 27, 35, 43, 51, 59,
                                   4, 12, 20, 28, 36, 44, 52, 60, 5, 13, 21, 29, 37, 45, 53, 61,
                                   6, 14, 22, 30, 38, 46, 54, 62, 7, 15, 23, 31, 39, 47, 55, 63};
    const __m512i T = _mm512_loadu_si512((const void *)tr);
    for (int e0 = 0; e0 < nb; e0 += 4) {
        __m512i A[4][4];
#pragma GCC unroll 4
        for (int h = 0; h < 4; h++)
#pragma GCC unroll 4
            for (int e = 0; e < 4; e++)
                A[h][e] = _mm512_setzero_si512();
        int s = 0;
        for (; s + 2 <= ns; s += 2) { /* two read bytes a step: one ternary XOR adds both products */
            const uint64_t *m = M + ((size_t)s * nb + e0) * 8, *n = m + (size_t)nb * 8;
            const int at = src[s], bt = src[s + 1];
            if (*pf < pf_end) { /* a line of the next 32 groups a step */
                _mm_prefetch(*pf, _MM_HINT_T1);
                *pf += 64;
            }
            const __m512i x0 = _mm512_set1_epi64((long long)X[0][at]), x1 = _mm512_set1_epi64((long long)X[1][at]);
            const __m512i x2 = _mm512_set1_epi64((long long)X[2][at]), x3 = _mm512_set1_epi64((long long)X[3][at]);
            const __m512i y0 = _mm512_set1_epi64((long long)X[0][bt]), y1 = _mm512_set1_epi64((long long)X[1][bt]);
            const __m512i y2 = _mm512_set1_epi64((long long)X[2][bt]), y3 = _mm512_set1_epi64((long long)X[3][bt]);
#pragma GCC unroll 4
            for (int e = 0; e < 4; e++) {
                const __m512i me = _mm512_loadu_si512((const void *)(m + 8 * e));
                const __m512i ne = _mm512_loadu_si512((const void *)(n + 8 * e));
                A[0][e] = _mm512_ternarylogic_epi64(A[0][e], _mm512_gf2p8affine_epi64_epi8(x0, me, 0),
                                                    _mm512_gf2p8affine_epi64_epi8(y0, ne, 0), 0x96);
                A[1][e] = _mm512_ternarylogic_epi64(A[1][e], _mm512_gf2p8affine_epi64_epi8(x1, me, 0),
                                                    _mm512_gf2p8affine_epi64_epi8(y1, ne, 0), 0x96);
                A[2][e] = _mm512_ternarylogic_epi64(A[2][e], _mm512_gf2p8affine_epi64_epi8(x2, me, 0),
                                                    _mm512_gf2p8affine_epi64_epi8(y2, ne, 0), 0x96);
                A[3][e] = _mm512_ternarylogic_epi64(A[3][e], _mm512_gf2p8affine_epi64_epi8(x3, me, 0),
                                                    _mm512_gf2p8affine_epi64_epi8(y3, ne, 0), 0x96);
            }
        }
        for (; s < ns; s++) {
            const uint64_t *m = M + ((size_t)s * nb + e0) * 8;
            const int at = src[s];
            const __m512i x0 = _mm512_set1_epi64((long long)X[0][at]), x1 = _mm512_set1_epi64((long long)X[1][at]);
            const __m512i x2 = _mm512_set1_epi64((long long)X[2][at]), x3 = _mm512_set1_epi64((long long)X[3][at]);
#pragma GCC unroll 4
            for (int e = 0; e < 4; e++) {
                const __m512i me = _mm512_loadu_si512((const void *)(m + 8 * e));
                A[0][e] = _mm512_xor_si512(A[0][e], _mm512_gf2p8affine_epi64_epi8(x0, me, 0));
                A[1][e] = _mm512_xor_si512(A[1][e], _mm512_gf2p8affine_epi64_epi8(x1, me, 0));
                A[2][e] = _mm512_xor_si512(A[2][e], _mm512_gf2p8affine_epi64_epi8(x2, me, 0));
                A[3][e] = _mm512_xor_si512(A[3][e], _mm512_gf2p8affine_epi64_epi8(x3, me, 0));
            }
        }
        for (int h = 0; h < 4; h++)
            for (int e = 0; e < 4; e++) { /* qword u of the transposed block: group 8 h + u's free bytes */
                uint64_t q[8] __attribute__((aligned(64)));
                _mm512_store_si512((void *)q, _mm512_permutexvar_epi8(T, A[h][e]));
                for (int u = 0; u < 8; u++)
                    memcpy(U[8 * h + u] + MAX_ROW * t + 8 * (e0 + e), &q[u], 8);
            }
    }
}

static int16_t *strata_inv(const int16_t *perm, int nperm);
static void to_strata_plain(const uint32_t *w, pad_src *ps, int64_t r0, int64_t r1, int64_t g0,
                            const int16_t *perm, int nperm, int F, uint32_t *out, int64_t ld);
__attribute__((target("avx512f,avx512bw"))) static int64_t to_strata_avx512(const uint32_t *w, pad_src *ps,
                                                                            int64_t r, int64_t r1, int64_t g0,
                                                                            const int16_t *inv, int nperm, int F,
                                                                            uint32_t *out, int64_t ld);

/* The irs4 encoder (as ps_irs_encode, the same output) by one GF(2)-linear map from the bytes the code
 * reads to its free bytes, 32 groups at a time (_gfni_affine): for codeword t, nsrc[t] read bytes src
 * (byte of the group) and, for each, nblk[t] (8 or 16) blocks of 8 matrices mats. spread, masks: as
 * place_free_bytes. Where out is given, each 32 groups then go on to ps_to_strata's placement (g0s:
 * the first group's number, pad, perm, nperm, F, ld as there; pad NULL: made from pad_key, as ps_gather's)
 * while they are in L1, where a separate pass read the superblock's 16 MiB of words back. hosted: NULL, or
 * [ng][nh] bytes that go to byte hpos[i] of each group before it is read (the outer parity, Outer.hosted_bytes,
 * written where the group's lines are loaded anyway). Returns 0, -1 for a bad map or offset, -2 where memory ran
 * out. */
TARGET int ps_irs_encode_affine(uint8_t *W, int64_t ng, const uint8_t *keep, const int32_t *nsrc, const int32_t *nblk,
                                const int16_t *src, const uint64_t *mats, const uint8_t *spread, const uint64_t *masks,
                                const uint32_t *pad, const uint8_t *pad_key, int64_t g0s, const int16_t *perm, int nperm,
                                int F, uint32_t *out, int64_t ld, const uint8_t *hosted, const int16_t *hpos, int nh)
{
    static const uint8_t zero[1024] __attribute__((aligned(64)));
    int16_t pos[64], at[4 * 256];
    int total = 0;
    if (hosted != NULL && (nh < 1 || nh > 64))
        return -1;
    for (int i = 0; hosted != NULL && i < nh; i++)
        if (hpos[i] < 0 || hpos[i] >= GROUP_BYTES)
            return -1;
    for (int t = 0; t < 4; t++) {
        if (nsrc[t] < 0 || nsrc[t] > 256 || (nblk[t] != 8 && nblk[t] != 16))
            return -1;
        total += nsrc[t];
    }
    transpose8_pos(pos);
    for (int i = 0; i < total; i++) {
        if (src[i] < 0 || src[i] >= GROUP_BYTES)
            return -1;
        at[i] = (int16_t)(64 * (src[i] >> 6) + pos[src[i] & 63]);
    }
    pad_src ps;
    if (out != NULL && pad_init(&ps, pad, pad_key, g0s))
        return -1;
    int16_t *inv = NULL;
    if (out != NULL && (inv = strata_inv(perm, nperm)) == NULL)
        return -2;
    uint64_t X[4][16 * 64] __attribute__((aligned(64)));
    uint8_t U[32][4 * MAX_ROW] __attribute__((aligned(64)));
    for (int64_t g0 = 0; g0 < ng; g0 += 32) {
        /* the next 32 groups to L2, a line a step of the products (affine_sums): their lines are read 8 groups
         * across, which the prefetchers do not follow; all 510 at once filled the line buffers, and 8 a chunk
         * loaded kept the loads beside them waiting (12% of the encoder's samples, on the first load's use) */
        const int64_t next = ng - g0 - 32 < 32 ? ng - g0 - 32 : 32;
        const char *pf = (const char *)(W + (g0 + 32) * GROUP_BYTES), *pf_end = pf + (next > 0 ? next : 0) * GROUP_BYTES;
        for (int h = 0; h < 4; h++) {
            const uint8_t *G[8];
            for (int u = 0; u < 8; u++)
                G[u] = g0 + 8 * h + u < ng ? W + (g0 + 8 * h + u) * GROUP_BYTES : zero;
            for (int64_t g = g0 + 8 * h; hosted != NULL && g < g0 + 8 * h + 8 && g < ng; g++)
                for (int i = 0; i < nh; i++) /* the outer parity's bytes, as Outer.put_hosted writes them */
                    W[g * GROUP_BYTES + hpos[i]] = hosted[g * nh + i];
            for (int c = 0; c < 16; c++) {
                __m512i r[8];
                const __m512i k = _mm512_loadu_si512((const void *)(keep + 64 * c));
                for (int u = 0; u < 8; u++)
                    r[u] = _mm512_and_si512(load_chunk(G[u], c), k);
                transpose8(r, X[h] + 64 * c);
            }
        }
        const int16_t *sp = at;
        const uint64_t *mp = mats;
        for (int t = 0; t < 4; t++) {
            affine_sums((const uint64_t(*)[16 * 64])X, sp, nsrc[t], mp, nblk[t], t, U, &pf, pf_end);
            mp += (size_t)nsrc[t] * nblk[t] * 8;
            sp += nsrc[t];
        }
        for (int u = 0; u < 32 && g0 + u < ng; u++)
            place_free_bytes(W + (g0 + u) * GROUP_BYTES, U[u], spread, masks);
        if (inv != NULL) {
            const int64_t e = g0 + 32 < ng ? g0 + 32 : ng;
            const int64_t r = to_strata_avx512((const uint32_t *)W, &ps, g0, e, g0s, inv, nperm, F, out, ld);
            to_strata_plain((const uint32_t *)W, &ps, r, e, g0s, perm, nperm, F, out, ld);
        }
    }
    free(inv);
    if (out != NULL)
        pad_clear(&ps);
    return 0;
}

/* ps_content's permutation: byte m < 16 nb of a vector of 16 words masked with keep is byte lo + m % nb
 * of word m / nb, nb = 4 - lo bytes a word (lo: the whole free bytes dropped). */
static void content_index(int lo, uint8_t *ix)
{
    const int nb = 4 - lo;
    memset(ix, 0, 64);
    for (int m = 0; m < 16 * nb; m++)
        ix[m] = (uint8_t)(4 * (m / nb) + lo + m % nb);
}

/* One row's content (ps_content's): idx from content_index, km the keep mask broadcast. */
TARGET static inline __attribute__((always_inline)) void content_row_vbmi(const uint32_t *row, int F, int nb, __m512i idx,
                                                                          __m512i km, uint8_t *o, int64_t shard)
{
    const __mmask64 part = nb == 4 ? ~(__mmask64)0 : (((__mmask64)1) << (16 * nb)) - 1;
    int64_t at = 0;
    int j = 0;
    for (; j + 16 <= F; j += 16, at += 16 * nb) {
        __m512i v = _mm512_and_si512(_mm512_loadu_si512((const void *)(row + j)), km);
        _mm512_mask_storeu_epi8(o + at, part, _mm512_permutexvar_epi8(idx, v));
    }
    if (j < F) { /* the last F - j < 16 words, masked (one byte at a time took a tenth of the pass) */
        const int n = F - j;
        __m512i v = _mm512_and_si512(_mm512_maskz_loadu_epi32((__mmask16)((1u << n) - 1), row + j), km);
        _mm512_mask_storeu_epi8(o + at, (((__mmask64)1) << (n * nb)) - 1, _mm512_permutexvar_epi8(idx, v));
        at += n * nb;
        j = F;
    }
    memcpy(o + at, row + j, 4 * (size_t)(255 - j));
    at += 4 * (255 - j);
    memset(o + at, 0, (size_t)(shard - at));
}

/* The outer code's content of rows [r0, r1) of w ([ng][255] words): each float word (position < F)
 * with its k free bits cleared and its k / 8 whole free bytes dropped, then the data words whole,
 * then zeros up to shard bytes (out: [ng][shard]). As _outer._content_nb. */
TARGET void ps_content(const uint32_t *w, int64_t r0, int64_t r1, int F, int k, uint8_t *out, int64_t shard)
{
    uint8_t ix[64];
    content_index(k / 8, ix);
    const __m512i idx = _mm512_loadu_si512((const void *)ix), km = _mm512_set1_epi32((int)~((1u << k) - 1u));
    for (int64_t r = r0; r < r1; r++) {
        const uint32_t *row = w + r * 255;
        prefetch_row(row + PF_PAD * 255); /* the rows came in by a pass over 16 MiB: not in L2, not prefetched */
        content_row_vbmi(row, F, 4 - k / 8, idx, km, out + r * shard, shard);
    }
}

/* content_sink's row on a CPU with VBMI (the gather's own paths need only AVX-512BW). */
TARGET static void content_put_vbmi(const uint32_t *row, const uint8_t *ix, uint32_t keep, int nb, uint8_t *o,
                                    int64_t shard)
{
    content_row_vbmi(row, 255, nb, _mm512_loadu_si512((const void *)ix), _mm512_set1_epi32((int)keep), o, shard);
}
#endif /* X86 */

/* Plain C kernels for any CPU, with clones the compiler vectorises for AVX2 and AVX-512, picked at load time. */
#if defined(X86) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default"), optimize("O3")))
#else
#define CLONES
#endif

/* ------------------------------------------------------------------ irs4 coding on any CPU
 * _irs_kernels._accumulate (the numba reference and fallback) in C: each byte of a group adds two rows
 * of a nibble table (its share) to the accumulator of its codeword. Position-major over batches
 * of PS_BATCH_WORDS / words groups, so that a position's table slice (128 rows) is reused by the
 * whole batch from L1. The coding kernels without GFNI: seal, and a light recover's syndromes,
 * then load no numba kernel. */
#define PS_BATCH_WORDS 1024 /* as _irs_kernels._BATCH_WORDS */

static inline uint32_t keep_of(uint8_t f)
{
    uint32_t k = 0;
    for (int b = 0; b < 4; b++)
        if (!((f >> b) & 1))
            k |= 0xFFu << (8 * b);
    return k;
}

static inline __attribute__((always_inline)) void shares_w(const uint32_t *W, const uint8_t *flags, int64_t g0, int64_t m,
                                                           const uint64_t *table, const int words, const uint8_t *b0s,
                                                           uint64_t *acc)
{
    memset(acc, 0, (size_t)32 * m * words);
    /* Four positions at a time (32 KB of table, in L1 while the batch passes over it), each group's
     * four accumulators held in registers across them: position 4q + jj feeds byte b to codeword
     * (b - jj) & 3, known when jj is unrolled. */
    for (int j0 = 0; j0 < 255; j0 += 4) {
        const int nj = 255 - j0 < 4 ? 255 - j0 : 4;
        for (int64_t gg = 0; gg < m; gg++) {
            uint64_t a[4][16];
            for (int t = 0; t < 4; t++)
                for (int w = 0; w < words; w++)
                    a[t][w] = acc[(4 * gg + t) * words + w];
            const uint32_t *row = W + (g0 + gg) * 255;
            const uint8_t *frow = flags ? flags + (g0 + gg) * 255 : NULL;
#pragma GCC unroll 4
            for (int jj = 0; jj < 4; jj++) {
                if (jj >= nj)
                    break;
                const int j = j0 + jj;
                const int b0 = b0s ? b0s[j] : 0;
                const uint64_t *base = table + (size_t)128 * j * words;
                uint32_t v = row[j];
                if (frow)
                    v &= keep_of(frow[j] & 0x0F);
#pragma GCC unroll 4
                for (int b = 0; b < 4; b++) {
                    if (b < b0)
                        continue;
                    const unsigned x = (v >> (8 * b)) & 255u;
                    const uint64_t *t0 = base + (size_t)(32 * b + (x & 15)) * words;
                    const uint64_t *t1 = base + (size_t)(32 * b + 16 + (x >> 4)) * words;
                    uint64_t *ac = a[(b - jj) & 3]; /* (b - j) & 3, as j0 is a multiple of 4 */
                    for (int w = 0; w < words; w++)
                        ac[w] ^= t0[w] ^ t1[w];
                }
            }
            for (int t = 0; t < 4; t++)
                for (int w = 0; w < words; w++)
                    acc[(4 * gg + t) * words + w] = a[t][w];
        }
    }
}

/* _irs_kernels._batch_shares for groups [g0, g0 + m): words a compile-time constant in each branch. */
CLONES static void shares(const uint32_t *W, const uint8_t *flags, int64_t g0, int64_t m, const uint64_t *table, int words,
                          const uint8_t *b0s, uint64_t *acc)
{
    switch (words) {
    case 4: shares_w(W, flags, g0, m, table, 4, b0s, acc); break;
    case 8: shares_w(W, flags, g0, m, table, 8, b0s, acc); break;
    case 12: shares_w(W, flags, g0, m, table, 12, b0s, acc); break;
    default: shares_w(W, flags, g0, m, table, 16, b0s, acc); break;
    }
}

/* Syndromes of groups [r0, r1) of W ([ng][255] words) from the table syn (_irs.Code.syn), as
 * _irs._run computes them for the decoder: acc ([4 ng][words]), fixed bytes of flags (when
 * given) counted as zero. Returns -1 for a words value the kernel does not take. */
int ps_shares(const uint32_t *W, const uint8_t *flags, int64_t r0, int64_t r1, const uint64_t *syn, int words,
              uint64_t *acc)
{
    if (words != 4 && words != 8 && words != 12 && words != 16)
        return -1;
    const int64_t batch = PS_BATCH_WORDS / words;
    for (int64_t g0 = r0; g0 < r1; g0 += batch) {
        const int64_t m = r1 - g0 < batch ? r1 - g0 : batch;
        shares(W, flags, g0, m, syn, words, NULL, acc + g0 * 4 * words);
    }
    return 0;
}

/* _irs.encode's numba path (_batch_shares with the table enc, then _place) for groups [r0, r1)
 * of W, updated in place (free bits zero on entry). fn: [4][fn_len] free nibble r of codeword
 * t -> 8 j + n; d: [4]; b0s: [255] bytes of each position the shares skip (its whole free bytes,
 * whose rows of enc are zero: all but hosted ones). */
int ps_encode_tab(uint32_t *W, int64_t r0, int64_t r1, const uint64_t *enc, int words, const uint8_t *b0s,
                  const int64_t *fn, int64_t fn_len, const int64_t *d)
{
    if (words != 4 && words != 8 && words != 12 && words != 16)
        return -1;
    for (int t = 0; t < 4; t++)
        if (d[t] < 0 || 2 * d[t] > fn_len || 2 * d[t] > 16 * words)
            return -2;
    const int64_t batch = PS_BATCH_WORDS / words;
    uint64_t acc[4 * PS_BATCH_WORDS];
    /* Free nibble r of codeword t goes to byte noff[t][r] of the row, at bit nsh[t][r]. Where each
     * codeword's nibbles pair up into whole bytes (k = 8 and 16: nibbles 2i and 2i + 1 are one
     * byte), byte i of its parity is ORed in at once: a quarter of the work. */
    int16_t noff[4][256];
    uint8_t nsh[4][256];
    int bytes = 1;
    for (int t = 0; t < 4; t++)
        for (int r = 0; r < 2 * d[t]; r++) {
            const int64_t f = fn[t * fn_len + r];
            noff[t][r] = (int16_t)(4 * (f >> 3) + ((f & 7) >> 1));
            nsh[t][r] = (uint8_t)(4 * (f & 1));
            bytes &= nsh[t][r] == 4 * (r & 1) && (!(r & 1) || noff[t][r] == noff[t][r - 1]);
        }
    for (int64_t g0 = r0; g0 < r1; g0 += batch) {
        const int64_t m = r1 - g0 < batch ? r1 - g0 : batch;
        shares(W, NULL, g0, m, enc, words, b0s, acc);
        for (int64_t gg = 0; gg < m; gg++) {
            uint32_t *row = W + (g0 + gg) * 255;
            for (int t = 0; t < 4; t++) {
                const uint8_t *ab = (const uint8_t *)(acc + (4 * gg + t) * words); /* nibble 2i + h: byte i */
                uint8_t *rb = (uint8_t *)row;
                if (bytes)
                    for (int i = 0; i < d[t]; i++)
                        rb[noff[t][2 * i]] |= ab[i];
                else
                    for (int i = 0; i < d[t]; i++) {
                        rb[noff[t][2 * i]] |= (uint8_t)((ab[i] & 15u) << nsh[t][2 * i]);
                        rb[noff[t][2 * i + 1]] |= (uint8_t)((ab[i] >> 4) << nsh[t][2 * i + 1]);
                    }
            }
        }
    }
    return 0;
}

/* _irs._gf2_inverse's elimination (Gauss-Jordan over GF(2)) on the packed augmented matrix
 * [m | I] (n rows of pw uint64 words, bit c of a row in word c >> 6): the same pivots (the first
 * row at or below c with bit c set), so the same result. Returns 0, or -1 where m is singular. */
CLONES int ps_gf2_eliminate(uint64_t *a, int64_t n, int64_t pw)
{
    for (int64_t c = 0; c < n; c++) {
        const int64_t w = c >> 6;
        const uint64_t bit = (uint64_t)1 << (c & 63);
        int64_t p = c;
        while (p < n && !(a[p * pw + w] & bit))
            p++;
        if (p == n)
            return -1;
        if (p != c)
            for (int64_t i = 0; i < pw; i++) {
                const uint64_t x = a[c * pw + i];
                a[c * pw + i] = a[p * pw + i];
                a[p * pw + i] = x;
            }
        const uint64_t *restrict pr = a + c * pw;
        for (int64_t r = 0; r < n; r++)
            if (r != c && (a[r * pw + w] & bit)) {
                uint64_t *restrict row = a + r * pw; /* never the pivot's row: the XOR vectorises */
                for (int64_t i = w; i < pw; i++)
                    row[i] ^= pr[i];
            }
    }
    return 0;
}

/* ------------------------------------------------------------------ the seal's data movers (any CPU) */

/* The outer code's content as ps_content (and _outer._content_nb), on any CPU: each float word
 * (position < F) less its k free bits, its k / 8 whole free bytes dropped, then the data words
 * whole, then zeros up to shard bytes (out: [ng][shard]). Little-endian words, as safetensors. */
static inline __attribute__((always_inline)) void content_row(const uint32_t *row, int F, uint32_t keep, const int lo,
                                                              uint8_t *o, int64_t shard)
{
    const int nb = 4 - lo;
    int64_t at = 0;
    for (int j = 0; j < F; j++, at += nb) {
        const uint32_t x = row[j] & keep;
        memcpy(o + at, (const uint8_t *)&x + lo, (size_t)nb);
    }
    memcpy(o + at, row + F, 4 * (size_t)(255 - F));
    at += 4 * (255 - F);
    memset(o + at, 0, (size_t)(shard - at));
}

/* content_row for lo 0, 1 or 2, a constant byte count per branch: each memcpy is a plain move. */
static inline __attribute__((always_inline)) void content_row_lo(const uint32_t *row, int F, uint32_t keep, int lo,
                                                                 uint8_t *o, int64_t shard)
{
    if (lo == 1)
        content_row(row, F, keep, 1, o, shard);
    else if (lo == 2)
        content_row(row, F, keep, 2, o, shard);
    else
        content_row(row, F, keep, 0, o, shard);
}

CLONES void ps_content_any(const uint32_t *w, int64_t r0, int64_t r1, int F, int k, uint8_t *out, int64_t shard)
{
    const uint32_t keep = ~((1u << k) - 1u);
    for (int64_t r = r0; r < r1; r++)
        content_row_lo(w + r * 255, F, keep, k / 8, out + r * shard, shard);
}

/* Where ps_gather puts the outer code's content of each row it gathers (ps_content's), while the row is
 * in L1, where a pass of its own read the superblock's 16 MiB of words back. Every position is a float
 * one there (F = 255): there are no data words to wait for. */
typedef struct {
    uint8_t *out; /* [rows][shard]: row r of the batch at out + r * shard */
    int64_t shard;
    uint32_t keep;
    int lo, vbmi; /* lo: the whole free bytes dropped (0..2); vbmi: ps_content's vector row */
    uint8_t ix[64];
} content_sink;

static inline void content_put(const content_sink *cs, const uint32_t *row, int64_t r)
{
    uint8_t *o = cs->out + r * cs->shard;
#ifdef X86
    if (cs->vbmi) {
        content_put_vbmi(row, cs->ix, cs->keep, 4 - cs->lo, o, cs->shard);
        return;
    }
#endif
    content_row_lo(row, 255, cs->keep, cs->lo, o, cs->shard);
}

#ifdef X86
#define MOVERS __attribute__((target("avx512f,avx512bw")))

static int have_avx512bw(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}

/* 16 gathered words of a row (mask m): the row's first NaN or Inf noted, the pad XORed, the bits kp keeps stored. */
MOVERS static inline void store16(uint32_t *out, const uint32_t *pd, int p, __mmask16 m, __m512i v, __m512i ex,
                                  __m512i kp, int *first_nan)
{
    const __mmask16 nan = _mm512_mask_cmpeq_epi32_mask(m, _mm512_and_si512(v, ex), ex);
    if (nan && *first_nan < 0)
        *first_nan = p + __builtin_ctz(nan);
    const __m512i x = _mm512_xor_si512(v, _mm512_maskz_loadu_epi32(m, pd + p));
    _mm512_mask_storeu_epi32(out + p, m, _mm512_and_si512(x, kp));
}

/* Rows [r, lim) of ps_gather where every float stratum's source lies within 2^31 words above lo:
 * per row, 16 positions at a time, the stratum of each (perm), its source's word offset (offw, a
 * table of 255 in L1) and the word itself are gathered, so the row is written, and pad read, as a
 * run instead of word by word. The same words and NaN index as the scalar loop (the test compares). */
MOVERS static int64_t gather_rows_avx512(uint32_t *w, int64_t r, int64_t lim, int64_t g0, const int16_t *perm, int nperm,
                                         int F, const int32_t *offw, const uint32_t *lo, pad_src *ps,
                                         uint32_t keep, int check_nan, const content_sink *cs)
{
    const __m512i ex = _mm512_set1_epi32(0x7F800000), kp = _mm512_set1_epi32((int)keep), nf = _mm512_set1_epi32(F);
    for (; r < lim; r++) {
        prefetch_sources(lo, offw, F, r);
        prefetch_pad(ps, r); /* among those streams the prefetchers lost the pad's too */
        const int16_t *pr = perm + ((g0 + r) % nperm) * 255;
        const uint32_t *pd = pad_row(ps, r), *src = lo + r;
        uint32_t *out = w + r * 255;
        int first_nan = -1;
        for (int p = 0; p < 255; p += 16) {
            const __mmask16 in_row = p + 16 <= 255 ? 0xFFFF : (__mmask16)((1u << (255 - p)) - 1);
            const __m512i j = _mm512_cvtepi16_epi32(_mm512_castsi512_si256(_mm512_maskz_loadu_epi16(in_row, pr + p)));
            const __mmask16 m = _mm512_mask_cmplt_epi32_mask(in_row, j, nf);
            const __m512i at = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, j, offw, 4);
            const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, at, src, 4);
            store16(out, pd, p, m, v, ex, kp, &first_nan);
        }
        if (first_nan >= 0 && check_nan)
            return r * 255 + first_nan;
        if (cs != NULL)
            content_put(cs, out, r);
    }
    return -1;
}

/* gather_rows_avx512 with each position's source offset looked up in at ([nperm][256]: offw of the
 * stratum at that position under each permutation, -1 for data strata), made once for a long run of
 * rows: one gather a 16 words instead of two. Same words and NaN index (the test compares). */
MOVERS static int64_t gather_rows_tab_avx512(uint32_t *w, int64_t r, int64_t lim, int64_t g0, int nperm, const int32_t *at,
                                             const uint32_t *lo, pad_src *ps, uint32_t keep, int check_nan,
                                             const content_sink *cs)
{
    const __m512i ex = _mm512_set1_epi32(0x7F800000), kp = _mm512_set1_epi32((int)keep), none = _mm512_set1_epi32(-1);
    int64_t q = (g0 + r) % nperm;
    for (; r < lim; r++) {
        prefetch_sources(lo, at, 255, r); /* permutation 0's row names every float stratum once */
        prefetch_pad(ps, r);
        const int32_t *ar = at + q * 256;
        const uint32_t *pd = pad_row(ps, r), *src = lo + r;
        uint32_t *out = w + r * 255;
        int first_nan = -1;
        for (int p = 0; p < 255; p += 16) {
            const __mmask16 in_row = p + 16 <= 255 ? 0xFFFF : 0x7FFF;
            const __m512i idx = _mm512_load_si512(ar + p);
            const __mmask16 m = _mm512_mask_cmpneq_epi32_mask(in_row, idx, none);
            const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, src, 4);
            store16(out, pd, p, m, v, ex, kp, &first_nan);
        }
        if (first_nan >= 0 && check_nan)
            return r * 255 + first_nan;
        if (cs != NULL)
            content_put(cs, out, r);
        if (++q == nperm)
            q = 0;
    }
    return -1;
}
#endif

/* The bit movers' vector paths (AVX-512BW): -1 until the CPU is asked, then 0 or 1. ps_set_vector
 * turns them off (0) or back on where the CPU has them (1), so the tests compare both ways. */
static int vec_state = -1;

int ps_set_vector(int on)
{
#ifdef X86
    __atomic_store_n(&vec_state, on && have_avx512bw(), __ATOMIC_RELAXED);
#else
    (void)on;
    __atomic_store_n(&vec_state, 0, __ATOMIC_RELAXED);
#endif
    return vec_state;
}

#ifdef X86
static int have_bmi2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("bmi2");
}

static int vec_on(void)
{
    int v = __atomic_load_n(&vec_state, __ATOMIC_RELAXED);
    if (v < 0) { /* two threads may both ask: the same answer */
        v = have_avx512bw();
        __atomic_store_n(&vec_state, v, __ATOMIC_RELAXED);
    }
    return v;
}

/* ps_unpack's low fields of 1 or 2 bits in blocks of 64 16-bit values (a bf16 or fp16 seal's parity
 * and tag bits), 32 values a vector: W = 1 takes 32 bits of the row as the mask of the values whose
 * bit 0 is set; W = 2 spreads 32 bits over 16 values, a shift per lane. As unpack16_row (tests compare). */
MOVERS static void unpack_lo16_avx512(const uint8_t *data, int64_t r0, int64_t r1, int W, uint16_t *u, int64_t ld)
{
    const __m512i keep = _mm512_set1_epi16((short)(uint16_t) ~((1u << W) - 1)), one = _mm512_set1_epi16(1);
    const __m512i sh = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i three = _mm512_set1_epi32(3);
    for (int64_t b = r0; b < r1; b++) {
        uint16_t *row = u + b * ld;
        const uint8_t *p = data + b * 8 * W;
        for (int h = 0; h < 2; h++) {
            __m512i v = _mm512_and_si512(_mm512_loadu_si512(row + 32 * h), keep);
            if (W == 1) {
                uint32_t m;
                memcpy(&m, p + 4 * h, 4);
                v = _mm512_mask_mov_epi16(v, (__mmask32)m, _mm512_or_si512(v, one));
            } else {
                uint32_t a, c;
                memcpy(&a, p + 8 * h, 4);
                memcpy(&c, p + 8 * h + 4, 4);
                __m256i lo = _mm512_cvtepi32_epi16(_mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)a), sh), three));
                __m256i hi = _mm512_cvtepi32_epi16(_mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)c), sh), three));
                v = _mm512_or_si512(v, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
            }
            _mm512_storeu_si512(row + 32 * h, v);
        }
    }
}

/* ps_write_tag where the tag's fields lie in a block's first 32 16-bit words (every 16-bit dtype; wider
 * ones at small k): word i gets (tag >> wshift[i]) & wmask[i], 16 words a shift per lane of the broadcast
 * tag. A tag of more than 32 bits (none is: tags are below p) goes to the scalar loop, which reads all 64. */
MOVERS static void write_tag_avx512(uint16_t *words, int64_t b0, int64_t b1, int nw, const uint16_t *wmask,
                                    const uint64_t *wshift, int nm, const uint64_t *tags)
{
    uint32_t sh[32] = {0}, mk[32] = {0};
    uint16_t keep[32];
    for (int i = 0; i < 32; i++) {
        const int on = i < nm && wmask[i]; /* a word without tag bits may have any shift: it is kept */
        sh[i] = on ? (uint32_t)(wshift[i] < 32 ? wshift[i] : 32) : 0; /* 32 or more: no bit of a 32-bit tag */
        mk[i] = on ? wmask[i] : 0;
        keep[i] = (uint16_t)~mk[i];
    }
    const __m512i s0 = _mm512_loadu_si512(sh), s1 = _mm512_loadu_si512(sh + 16);
    const __m512i k0 = _mm512_loadu_si512(mk), k1 = _mm512_loadu_si512(mk + 16), kp = _mm512_loadu_si512(keep);
    const __mmask32 m = nm >= 32 ? 0xFFFFFFFFu : (1u << nm) - 1;
    for (int64_t b = b0; b < b1; b++) {
        uint16_t *w = words + b * (int64_t)nw;
        if (tags[b] >> 32) {
            for (int i = 0; i < nm; i++)
                if (wmask[i])
                    w[i] = (uint16_t)((w[i] & ~wmask[i]) | ((tags[b] >> wshift[i]) & wmask[i]));
            continue;
        }
        const __m512i t = _mm512_set1_epi32((int)(uint32_t)tags[b]);
        __m256i lo = _mm512_cvtepi32_epi16(_mm512_and_si512(_mm512_srlv_epi32(t, s0), k0));
        __m256i hi = _mm512_cvtepi32_epi16(_mm512_and_si512(_mm512_srlv_epi32(t, s1), k1));
        __m512i v = _mm512_and_si512(_mm512_maskz_loadu_epi16(m, w), kp);
        v = _mm512_or_si512(v, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
        _mm512_mask_storeu_epi16(w, m, v);
    }
}
#endif

/* All n bytes at byte offset off of fd into (write = 0: pread) or from (pwrite) buf, retrying short
 * and interrupted calls. Returns 0, -errno of a failed call, or -100000 where a call moved no bytes
 * (the file ended). The seal's gather and its strata writes both move bytes so. */
static int64_t io_all(int fd, char *buf, int64_t n, int64_t off, int write)
{
    while (n > 0) {
        ssize_t got = write ? pwrite(fd, buf, (size_t)n, (off_t)off) : pread(fd, buf, (size_t)n, (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return -(int64_t)errno;
        if (got == 0)
            return -100000;
        buf += got, off += got, n -= got;
    }
    return 0;
}

#define READ_AHEAD 2 /* batches after a gather's whose pieces it asks the kernel to read ahead */
#define TAB_ROWS 2048 /* rows a run of ps_gather needs before its offset table pays for itself */

/* The float words of a batch of consecutive groups, in position order: the gather of irs4 sealing.
 *
 * w: [ng][255] words (data positions are left as they are); row r is group g0 + r, and position
 * p holds stratum perm[(g0 + r) % nperm][p]. Stratum j < F comes in pieces of rows: piece q
 * covers rows up to row_end[q] (pieces pstart[j]..pstart[j+1]-1, in row order), and row r of it
 * is the word at address base[q] + 4 r; or, where fd[q] >= 0, at byte offset base[q] + 4 r of that
 * file, read with pread into row j of stage ([F] rows of ld words, ld >= ng: _native.row_stride
 * keeps them off one cache set): a mapped model file is then
 * never faulted in, so it adds nothing to resident memory and needs no release. Each word is XORed with pad (same shape as w;
 * NULL: made from pad_key, see pad_src) and masked with keep. Only rows [r0, r1) are done (one call per thread).
 * Returns -3 when a read fails, -2 for bad arguments, else -1, or with check_nan the index r * 255 + p of the
 * first word whose exponent is all ones (NaN or Inf), which the caller refuses. simd: AVX-512 where the CPU
 * has it (0: the plain loop, for the tests' comparison). content: NULL, or [rows][shard] bytes where each row
 * gathered gets the outer code's content (ps_content's at k, where keep clears the low k bits, k < 24); only
 * with F = 255, and shard at least its 255 (4 - k / 8) bytes (-2 otherwise). A NaN's row and the rows after it
 * in [r0, r1) get none. */
static int64_t gather(uint32_t *w, int64_t r0, int64_t r1, int64_t g0, const int16_t *perm, int nperm, int F,
                      const int64_t *pstart, const int64_t *row_end, const uint64_t *base, const int32_t *fd,
                      uint32_t *stage, int64_t ld, pad_src *pad, uint32_t keep, int check_nan, int simd,
                      const content_sink *cs);

int64_t ps_gather(uint32_t *w, int64_t r0, int64_t r1, int64_t g0, const int16_t *perm, int nperm, int F, const int64_t *pstart,
                  const int64_t *row_end, const uint64_t *base, const int32_t *fd, uint32_t *stage, int64_t ld,
                  const uint32_t *pad, const uint8_t *pad_key, uint32_t keep, int check_nan, int simd, uint8_t *content,
                  int64_t shard)
{
    content_sink cs = {content, shard, keep, 0, 0, {0}};
    if (content != NULL) { /* keep must clear the low k bits, k < 24: the content drops k / 8 whole bytes */
        const int k = keep == 0xFFFFFFFFu ? 0 : keep == 0 ? 32 : __builtin_ctz(keep);
        cs.lo = k / 8;
        if (F != 255 || k >= 24 || keep != ~((1u << k) - 1u) || shard < 255 * (4 - cs.lo))
            return -2;
#ifdef X86
        cs.vbmi = simd && ps_gfni(); /* simd 0: the portable row too, for the tests' comparison */
        content_index(cs.lo, cs.ix);
#endif
    }
    pad_src ps;
    if (F < 1 || F > 255 || pad_init(&ps, pad, pad_key, g0))
        return -2;
    const int64_t got = gather(w, r0, r1, g0, perm, nperm, F, pstart, row_end, base, fd, stage, ld, &ps, keep,
                               check_nan, simd, content != NULL ? &cs : NULL);
    pad_clear(&ps);
    return got;
}

/* The rows [*a, *b) of piece q of stratum j (its pieces pstart[j] ..., see gather) that lie in [r0, r1);
 * none where *a >= *b. */
static inline void piece_rows(const int64_t *pstart, const int64_t *row_end, int j, int64_t q, int64_t r0, int64_t r1,
                              int64_t *a, int64_t *b)
{
    const int64_t s = q == pstart[j] ? 0 : row_end[q - 1], e = row_end[q];
    *a = s > r0 ? s : r0;
    *b = e < r1 ? e : r1;
}

static int64_t gather(uint32_t *w, int64_t r0, int64_t r1, int64_t g0, const int16_t *perm, int nperm, int F,
                      const int64_t *pstart, const int64_t *row_end, const uint64_t *base, const int32_t *fd,
                      uint32_t *stage, int64_t ld, pad_src *pad, uint32_t keep, int check_nan, int simd,
                      const content_sink *cs)
{
    int64_t cur[256];
    const uint32_t *src[256];
#ifdef X86
    int32_t offw[256];
    simd = simd && have_avx512bw();
#endif
#ifdef POSIX_FADV_WILLNEED
    /* The file pieces' rows to the page cache before they are read, and after a stratum's last row the next
     * READ_AHEAD batches' (the rows that follow in the file): the F pieces are F interleaved streams of one
     * file, which the kernel's readahead takes for random reads, so each page not in memory was a read the
     * seal waited for, one after another. */
    for (int j = 0; j < F; j++)
        for (int64_t q = pstart[j]; q < pstart[j + 1]; q++) {
            int64_t a, b;
            piece_rows(pstart, row_end, j, q, r0, r1, &a, &b);
            const int64_t end = row_end[q]; /* the last piece's: the batch's rows */
            const int64_t more = q == pstart[j + 1] - 1 && r1 >= end ? READ_AHEAD * end : 0;
            if (fd[q] >= 0 && a < b)
                (void)posix_fadvise(fd[q], (off_t)(base[q] + 4 * (uint64_t)a), (off_t)(4 * (b - a + more)),
                                    POSIX_FADV_WILLNEED);
        }
#endif
    for (int j = 0; j < F; j++) {
        cur[j] = pstart[j];
        for (int64_t q = pstart[j]; q < pstart[j + 1]; q++) { /* read file pieces into stage row j */
            int64_t a, b;
            piece_rows(pstart, row_end, j, q, r0, r1, &a, &b);
            if (fd[q] < 0 || a >= b)
                continue;
            if (io_all(fd[q], (char *)(stage + j * ld + a), 4 * (b - a), (int64_t)base[q] + 4 * a, 0))
                return -3;
        }
    }
    int64_t r = r0;
    while (r < r1) {
        int64_t lim = r1;
        for (int j = 0; j < F; j++) {
            while (row_end[cur[j]] <= r)
                cur[j]++;
            int64_t q = cur[j];
            src[j] = fd[q] >= 0 ? stage + j * ld : (const uint32_t *)(uintptr_t)base[q];
            /* file pieces all lie in stage row j: the source changes only where a memory piece starts
             * (split at every piece, a quarter of a seal's rows went in short runs to the slower loop) */
            while (fd[q] >= 0 && q + 1 < pstart[j + 1] && fd[q + 1] >= 0 && row_end[q] < lim)
                q++;
            if (row_end[q] < lim)
                lim = row_end[q];
        }
#ifdef X86
        if (simd) { /* word offsets from the lowest source, when they all fit a gather's 32-bit index */
            uintptr_t low = (uintptr_t)src[0];
            for (int j = 1; j < F; j++)
                low = (uintptr_t)src[j] < low ? (uintptr_t)src[j] : low;
            int fits = 1;
            for (int j = 0; j < F && fits; j++) {
                uintptr_t d = (uintptr_t)src[j] - low;
                fits = d % 4 == 0 && d / 4 + (uintptr_t)lim < ((uintptr_t)1 << 31);
                offw[j] = (int32_t)(d / 4);
            }
            if (fits && lim - r >= TAB_ROWS && nperm <= 256) {
                int32_t *at = aligned_alloc(64, sizeof(int32_t) * 256 * (size_t)nperm);
                if (at != NULL) {
                    for (int q = 0; q < nperm; q++) {
                        for (int p = 0; p < 255; p++)
                            at[q * 256 + p] = perm[q * 255 + p] < F ? offw[perm[q * 255 + p]] : -1;
                        at[q * 256 + 255] = -1;
                    }
                    int64_t got = gather_rows_tab_avx512(w, r, lim, g0, nperm, at, (const uint32_t *)low, pad, keep,
                                                         check_nan, cs);
                    free(at);
                    if (got >= 0)
                        return got;
                    r = lim;
                    continue;
                }
            }
            if (fits) {
                int64_t got = gather_rows_avx512(w, r, lim, g0, perm, nperm, F, offw, (const uint32_t *)low, pad, keep,
                                                 check_nan, cs);
                if (got >= 0)
                    return got;
                r = lim;
                continue;
            }
        }
#endif
        for (; r < lim; r++) {
            const int16_t *pr = perm + ((g0 + r) % nperm) * 255;
            uint32_t *out = w + r * 255;
            const uint32_t *pd = pad_row(pad, r);
            uint32_t nan = 0;
            for (int p = 0; p < 255; p++) {
                int j = pr[p];
                if (j >= F)
                    continue;
                uint32_t v; /* a source may lie at any byte address (not a 32-bit load's alignment) */
                memcpy(&v, src[j] + r, 4);
                nan |= (uint32_t)((v & 0x7F800000u) == 0x7F800000u);
                out[p] = (v ^ pd[p]) & keep;
            }
            for (int p = 0; nan && check_nan && p < 255; p++) {
                uint32_t v;
                if (pr[p] >= F)
                    continue;
                memcpy(&v, src[pr[p]] + r, 4);
                if ((v & 0x7F800000u) == 0x7F800000u)
                    return r * 255 + p;
            }
            if (cs != NULL)
                content_put(cs, out, r);
        }
    }
    return -1;
}

#ifdef X86
/* Rows [r, r1) of ps_to_strata, 16 at a time (the rest left to the caller; returns where it stopped):
 * the 16 rows XOR their pad go into a buffer in L1, then each stratum's 16 words are gathered from it
 * by the position of the stratum under each row's permutation (inv: [255][nperm + 16], wrapping) and
 * stored as one run. Storing word by word down a column took 1.4-1.6x as long. */
MOVERS static int64_t to_strata_avx512(const uint32_t *w, pad_src *ps, int64_t r, int64_t r1, int64_t g0,
                                       const int16_t *inv, int nperm, int F, uint32_t *out, int64_t ld)
{
    uint32_t buf[16 * 256] __attribute__((aligned(64)));
    const __m512i rows = _mm512_setr_epi32(0, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 2560, 2816, 3072,
                                           3328, 3584, 3840);
    const int iw = nperm + 16;
    for (; r + 16 <= r1; r += 16) {
        for (int s = 0; s < 16; s++) {
            const uint32_t *in = w + (r + s) * 255, *pd = pad_row(ps, r + s);
            prefetch_pad(ps, r + s + 16 - PF_PAD); /* the next step's keyed offset (its rows came a superblock ago) */
            for (int p = 0; p < 255; p += 16) {
                const __mmask16 m = p + 16 <= 255 ? 0xFFFF : 0x7FFF;
                _mm512_store_si512(buf + 256 * s + p, _mm512_xor_si512(_mm512_maskz_loadu_epi32(m, in + p),
                                                                       _mm512_maskz_loadu_epi32(m, pd + p)));
            }
        }
        const int64_t q = (g0 + r) % nperm;
        for (int j = 0; j < F; j++) {
            __builtin_prefetch(out + j * ld + r + PF_ROWS, 1, 3); /* owned before it is stored: 255 streams */
            const __m256i at = _mm256_loadu_si256((const void *)(inv + (int64_t)j * iw + q));
            const __m512i idx = _mm512_add_epi32(_mm512_cvtepi16_epi32(at), rows);
            _mm512_storeu_si512(out + j * ld + r, _mm512_i32gather_epi32(idx, buf, 4));
        }
    }
    return r;
}
#endif

/* to_strata_avx512's table: inv[j][q] = the position of stratum j under permutation q (q < nperm + 16,
 * wrapping, so that 16 rows from any q read one run); NULL where memory ran out. Free with free(). */
static int16_t *strata_inv(const int16_t *perm, int nperm)
{
    const int iw = nperm + 16;
    int16_t *inv = calloc(255 * (size_t)iw, sizeof(int16_t)); /* zeroed: any index stays in the buffer */
    if (inv == NULL)
        return NULL;
    for (int q = 0; q < nperm; q++)
        for (int p = 0; p < 255; p++)
            if (perm[q * 255 + p] >= 0 && perm[q * 255 + p] < 255)
                inv[(int64_t)perm[q * 255 + p] * iw + q] = (int16_t)p;
    for (int j = 0; j < 255; j++)
        for (int q = nperm; q < iw; q++)
            inv[(int64_t)j * iw + q] = inv[(int64_t)j * iw + q % nperm];
    return inv;
}

/* ps_to_strata's rows [r0, r1) word by word (any CPU). */
static void to_strata_plain(const uint32_t *w, pad_src *ps, int64_t r0, int64_t r1, int64_t g0,
                            const int16_t *perm, int nperm, int F, uint32_t *out, int64_t ld)
{
    for (int64_t r = r0; r < r1; r++) {
        const int16_t *pr = perm + ((g0 + r) % nperm) * 255;
        const uint32_t *in = w + r * 255, *pd = pad_row(ps, r);
        for (int p = 0; p < 255; p++) {
            int j = pr[p];
            if (j < F)
                out[j * ld + r] = in[p] ^ pd[p];
        }
    }
}

/* The inverse placement, with the pad removed: out[j][r] = w[r][p] ^ pad[r][p] for the position p
 * of float stratum j < F in group g0 + r, for rows [r0, r1) (out: [F][ld], rows of ld words).
 * perm: [nperm][255], each row a permutation of 0..254. Returns 0, -1 where memory ran out, -2 without pad. */
int ps_to_strata(const uint32_t *w, const uint32_t *pad, int64_t r0, int64_t r1, int64_t g0, const int16_t *perm, int nperm, int F,
                 uint32_t *out, int64_t ld, int simd)
{
    pad_src ps;
    if (pad_init(&ps, pad, NULL, g0))
        return -2;
#ifdef X86
    if (simd && have_avx512bw() && r1 - r0 >= 16) {
        int16_t *inv = strata_inv(perm, nperm);
        if (inv == NULL)
            return -1;
        r0 = to_strata_avx512(w, &ps, r0, r1, g0, inv, nperm, F, out, ld);
        free(inv);
    }
#endif
    to_strata_plain(w, &ps, r0, r1, g0, perm, nperm, F, out, ld);
    return 0;
}

/* Rows of the float strata [j0, j1) of wt (rows of ld words) to (write) or from (read) where the pieces of
 * ps_gather's layout say: pwrite or pread where fd[q] >= 0 (base[q]: the byte offset of row 0 in that
 * file), a copy where fd[q] == -1 (base[q]: the address of row 0), nothing for padding (fd[q] == -2).
 * Returns 0, -errno of a failed call, or -100000 when a call moved no bytes. */
static int64_t move_strata(uint32_t *wt, int64_t ld, int j0, int j1, const int64_t *pstart, const int64_t *row_end,
                           const uint64_t *base, const int32_t *fd, int write)
{
    for (int j = j0; j < j1; j++)
        for (int64_t q = pstart[j]; q < pstart[j + 1]; q++) {
            const int64_t a = q == pstart[j] ? 0 : row_end[q - 1], b = row_end[q];
            if (fd[q] == -2 || a >= b)
                continue;
            char *row = (char *)(wt + j * ld + a), *at = (char *)(uintptr_t)(base[q] + 4 * (uint64_t)a);
            if (fd[q] < 0) {
                memcpy(write ? at : row, write ? row : at, 4 * (size_t)(b - a));
                continue;
            }
            const int64_t e = io_all(fd[q], row, 4 * (b - a), (int64_t)base[q] + 4 * a, write);
            if (e)
                return e;
        }
    return 0;
}

/* The scatter's writes (as _strata.write_run, piece by piece): move_strata from wt. */
int64_t ps_put_strata(const uint32_t *wt, int64_t ld, int j0, int j1, const int64_t *pstart, const int64_t *row_end,
                      const uint64_t *base, const int32_t *fd)
{
    return move_strata((uint32_t *)(uintptr_t)wt, ld, j0, j1, pstart, row_end, base, fd, 1);
}

/* Its reads: move_strata into wt (the seal's tag pass reads a few blocks a stratum row so, with no page faults). */
int64_t ps_get_strata(uint32_t *wt, int64_t ld, int j0, int j1, const int64_t *pstart, const int64_t *row_end,
                      const uint64_t *base, const int32_t *fd)
{
    return move_strata(wt, ld, j0, j1, pstart, row_end, base, fd, 0);
}

/* The seal's cut blocks (_seal_cuts): part p's n[p] words, at src[p] of the strata flat, to or from
 * slot[p] of row row[p] of rows ([.][64]). The caller checks every range lies in its array. */
void ps_move_parts(uint32_t *flat, const int64_t *src, const int64_t *row, const int64_t *slot, const int64_t *n,
                   int64_t m, uint32_t *rows, int to_rows)
{
    for (int64_t q = 0; q < m; q++) {
        uint32_t *r = rows + 64 * row[q] + slot[q];
        memcpy(to_rows ? r : flat + src[q], to_rows ? flat + src[q] : r, 4 * (size_t)n[q]);
    }
}

/* A block's tag from its sums (acc2: the second hash's, read where two is set) and its pads pd (mlh_any). */
static inline uint64_t mlh_end(uint64_t acc, uint64_t acc2, int two, const uint64_t *pd)
{
    const uint64_t p = 4294967291ull; /* 2^32 - 5 */
    if (two)
        acc = (acc % p + (acc2 % p) * pd[2] % p) % p;
    return ((acc % p) * pd[1] % p + pd[0]) % p;
}

/* The block MAC's hash (as _kernels.mlh_tags): for blocks [b0, b1) of words ([nb][nw] 16-bit),
 * h = sum_i keys[i] * m_i mod p, plus x_b * (sum_i keys2[i] * m_i mod p) where keys2 is given (the
 * third MAC's per-block hash), and out[b] = (h * r_b mod p + s_b) mod p, pads[pc * b ..] = (s_b, r_b, x_b)
 * (pc columns, x_b read only with keys2), where m_i is word i with the tag bits wmask[i] (i < nm)
 * cleared in blocks flagged internal. keys < 2^32 and m_i < 2^16, so the sum of up to 256 terms
 * stays below 2^56 and one reduction is exact; r_b, x_b < 2^32 keep the products in 64 bits.
 * Each word is read once for both sums. Plain C (any CPU, CLONES). */
CLONES static void mlh_any(const uint16_t *words, int64_t b0, int64_t b1, int nw, const uint64_t *keys, const uint64_t *keys2,
                           const uint16_t *wmask, int nm, const uint8_t *internal, const uint64_t *pads, int pc, uint64_t *out)
{
    for (int64_t b = b0; b < b1; b++) {
        const uint16_t *w = words + b * (int64_t)nw;
        const uint64_t *pd = pads + pc * b;
        uint64_t acc = 0, acc2 = 0;
        int i = 0;
        if (keys2) {
            if (internal[b])
                for (; i < nm; i++) {
                    const uint64_t m = (uint16_t)(w[i] & ~wmask[i]);
                    acc += keys[i] * m, acc2 += keys2[i] * m;
                }
            for (; i < nw; i++)
                acc += keys[i] * (uint64_t)w[i], acc2 += keys2[i] * (uint64_t)w[i];
        } else {
            if (internal[b])
                for (; i < nm; i++)
                    acc += keys[i] * (uint64_t)(uint16_t)(w[i] & ~wmask[i]);
            for (; i < nw; i++)
                acc += keys[i] * (uint64_t)w[i];
        }
        out[b] = mlh_end(acc, acc2, keys2 != NULL, pd);
    }
}

#ifdef X86
#define IFMA __attribute__((target("avx512f,avx512bw,avx512vl,avx512ifma")))
static int have_ifma(void)
{
    __builtin_cpu_init();
    return have_avx512bw() && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512ifma");
}

/* Each lane mod p = 2^32 - 5, for any 64-bit value: 2^32 = 5 (mod p), so folding the high half in
 * twice leaves x < 2^32 + 30, and one subtraction a residue in [0, p). */
IFMA static inline __m512i vmod_p(__m512i x)
{
    const __m512i lo = _mm512_set1_epi64(0xFFFFFFFFll), p = _mm512_set1_epi64(4294967291ll);
    for (int r = 0; r < 2; r++) {
        const __m512i h = _mm512_srli_epi64(x, 32);
        x = _mm512_add_epi64(_mm512_and_si512(x, lo), _mm512_add_epi64(_mm512_slli_epi64(h, 2), h));
    }
    return _mm512_mask_sub_epi64(x, _mm512_cmpge_epu64_mask(x, p), x, p);
}

/* mlh_end for n <= 8 blocks at once (sums s, s2; pads pd, pc columns a block), 8 lanes: a block's chain of
 * scalar reductions mod p was a large share of mlh_ifma's time (14% of it saved so). The products need
 * r_b, x_b < 2^32 (vpmuludq reads 32 bits): blocks whose pads are not fall back to mlh_end. */
IFMA static inline void mlh_end8(const uint64_t *s, const uint64_t *s2, const uint64_t *pd, int pc, int n,
                                 uint64_t *out)
{
    const __mmask8 k = (__mmask8)((1u << n) - 1);
    const __m512i at = _mm512_set_epi64(7 * pc, 6 * pc, 5 * pc, 4 * pc, 3 * pc, 2 * pc, pc, 0);
    const __m512i z = _mm512_setzero_si512();
    const __m512i p0 = _mm512_mask_i64gather_epi64(z, k, at, (const void *)pd, 8);
    const __m512i p1 = _mm512_mask_i64gather_epi64(z, k, at, (const void *)(pd + 1), 8);
    const __m512i p2 = s2 ? _mm512_mask_i64gather_epi64(z, k, at, (const void *)(pd + 2), 8) : z;
    if (_mm512_test_epi64_mask(_mm512_or_si512(p1, p2), _mm512_set1_epi64((long long)0xFFFFFFFF00000000ull))) {
        for (int i = 0; i < n; i++)
            out[i] = mlh_end(s[i], s2 ? s2[i] : 0, s2 != NULL, pd + (int64_t)pc * i);
        return;
    }
    __m512i acc = vmod_p(_mm512_maskz_loadu_epi64(k, s));
    if (s2)
        acc = vmod_p(_mm512_add_epi64(acc, vmod_p(_mm512_mul_epu32(vmod_p(_mm512_maskz_loadu_epi64(k, s2)), p2))));
    acc = vmod_p(_mm512_add_epi64(vmod_p(_mm512_mul_epu32(acc, p1)), p0));
    _mm512_mask_storeu_epi64(out, k, acc);
}

/* mlh_any with 52-bit multiply-adds (AVX-512 IFMA), 8 words at a time: a product k_i m_i < 2^48 is
 * whole in vpmadd52luq's low 52 bits and the add is 64-bit, so each lane's sum is exact as in plain C
 * (one instruction for the multiply and the add, where plain C vectorised took two). */
IFMA static void mlh_ifma(const uint16_t *words, int64_t b0, int64_t b1, int nw, const uint64_t *keys,
                          const uint64_t *keys2, const uint16_t *wmask, int nm, const uint8_t *internal,
                          const uint64_t *pads, int pc, uint64_t *out)
{
    uint64_t sums[8], sums2[8]; /* the blocks not yet ended (mlh_end8) */
    int held = 0;
    uint16_t clear[264], ones[264];   /* an internal block's words AND clear: its tag bits cleared */
    for (int i = 0; i < 264; i++)
        clear[i] = i < nm ? (uint16_t)~wmask[i] : 0xFFFF, ones[i] = 0xFFFF;
    const __mmask8 tail = (__mmask8)((1u << (nw & 7)) - 1);
    const int whole = nw & ~7;
    for (int64_t b = b0; b < b1; b++) {
        const uint16_t *w = words + b * (int64_t)nw, *cl = internal[b] ? clear : ones;
        if (b + 4 < b1) /* the staged rows the seal tags were written a superblock's 16 MiB ago: out of L2 */
            for (int c = 0; c < 2 * nw; c += 64)
                __builtin_prefetch((const char *)(w + 4 * (int64_t)nw) + c, 0, 3);
        __m512i a = _mm512_setzero_si512(), a2 = _mm512_setzero_si512();
        for (int i = 0; i < whole; i += 8) {
            const __m128i x = _mm_and_si128(_mm_loadu_si128((const void *)(w + i)), _mm_loadu_si128((const void *)(cl + i)));
            const __m512i m = _mm512_cvtepu16_epi64(x);
            a = _mm512_madd52lo_epu64(a, m, _mm512_loadu_si512((const void *)(keys + i)));
            if (keys2)
                a2 = _mm512_madd52lo_epu64(a2, m, _mm512_loadu_si512((const void *)(keys2 + i)));
        }
        if (tail) {
            const __m128i x = _mm_and_si128(_mm_maskz_loadu_epi16(tail, w + whole), _mm_loadu_si128((const void *)(cl + whole)));
            const __m512i m = _mm512_cvtepu16_epi64(x);
            a = _mm512_madd52lo_epu64(a, m, _mm512_maskz_loadu_epi64(tail, keys + whole));
            if (keys2)
                a2 = _mm512_madd52lo_epu64(a2, m, _mm512_maskz_loadu_epi64(tail, keys2 + whole));
        }
        sums[held] = (uint64_t)_mm512_reduce_add_epi64(a);
        sums2[held] = keys2 ? (uint64_t)_mm512_reduce_add_epi64(a2) : 0;
        if (++held == 8 || b + 1 == b1) {
            const int64_t first = b + 1 - held;
            mlh_end8(sums, keys2 ? sums2 : NULL, pads + pc * first, pc, held, out + first);
            held = 0;
        }
    }
}
#endif

/* ps_mlh: mlh_ifma where the CPU has IFMA and simd is set, else mlh_any. */
void ps_mlh(const uint16_t *words, int64_t b0, int64_t b1, int nw, const uint64_t *keys, const uint64_t *keys2,
            const uint16_t *wmask, int nm, const uint8_t *internal, const uint64_t *pads, int pc, uint64_t *out, int simd)
{
#ifdef X86
    if (simd && nw <= 256 && have_ifma()) {
        mlh_ifma(words, b0, b1, nw, keys, keys2, wmask, nm, internal, pads, pc, out);
        return;
    }
#endif
    mlh_any(words, b0, b1, nw, keys, keys2, wmask, nm, internal, pads, pc, out);
}

/* The largest u[i] & mask of n 16-bit values, one pass (numpy's took two and a temporary as large):
 * a seal refuses a float tensor holding NaN or Inf, whose exponent bits are all ones, by it. */
CLONES int64_t ps_max_masked16(const uint16_t *u, int64_t n, int64_t mask)
{
    const uint16_t m16 = (uint16_t)mask;
    uint16_t best = 0;
    for (int64_t i = 0; i < n; i++) {
        const uint16_t v = u[i] & m16;
        best = v > best ? v : best;
    }
    return best;
}

/* Each block's stored tag (as _kernels.read_tag_words): OR of (word i & wmask[i]) << wshift[i], i < nm. */
CLONES void ps_read_tag(const uint16_t *words, int64_t b0, int64_t b1, int nw, const uint16_t *wmask, const uint64_t *wshift,
                 int nm, uint64_t *out)
{
    for (int64_t b = b0; b < b1; b++) {
        const uint16_t *w = words + b * (int64_t)nw;
        uint64_t t = 0;
        for (int i = 0; i < nm; i++)
            if (wmask[i]) /* a word without tag bits may have a shift past 63 */
                t |= (uint64_t)(w[i] & wmask[i]) << wshift[i];
        out[b] = t;
    }
}

/* Write each block's tag (as _bits.write_tags; the inverse of ps_read_tag): word i gets the bits
 * (tags[b] >> wshift[i]) & wmask[i], the rest of it kept, i < nm. */
CLONES void ps_write_tag(uint16_t *words, int64_t b0, int64_t b1, int nw, const uint16_t *wmask, const uint64_t *wshift,
                  int nm, const uint64_t *tags)
{
#ifdef X86
    if (nm <= 32 && vec_on()) {
        write_tag_avx512(words, b0, b1, nw, wmask, wshift, nm, tags);
        return;
    }
#endif
    for (int64_t b = b0; b < b1; b++) {
        uint16_t *w = words + b * (int64_t)nw;
        for (int i = 0; i < nm; i++)
            if (wmask[i])
                w[i] = (uint16_t)((w[i] & ~wmask[i]) | ((tags[b] >> wshift[i]) & wmask[i]));
    }
}

#ifdef X86
/* Syndromes of groups [r0, r1) of W, as the decoder takes them (acc: [ng * 4][words] uint64,
 * row 4 g + t holds syndrome i of codeword t in byte i, zero past d_t). With flags
 * ([ng][255]), the bytes marked fixed (flag bits 0-3) count as zero, as in _irs_kernels._accumulate.
 * Same steps as ps_irs_encode's first two, then phi^-1 (phi_inv) back to GF(2^8) mod 0x11d. */
TARGET int ps_irs_syndromes(const uint8_t *W, const uint8_t *flags, int64_t r0, int64_t r1, const uint8_t *powers,
                            int dmax, const uint8_t *perm, uint64_t phi, uint64_t phi_inv, const int32_t *d, int words,
                            uint64_t *acc)
{
    if (dmax < 1 || dmax > MAX_D || 8 * words < dmax)
        return -1;
    uint8_t R[4][MAX_D * 4] __attribute__((aligned(64)));
    uint8_t *const Rp[4] = {R[0], R[1], R[2], R[3]};
    const int nblk = (dmax + 15) / 16;
    for (int64_t g0 = r0; g0 < r1; g0 += 4) {
        const uint8_t *Gq[4], *Fq[4];
        quad_groups(W, g0, r1, Gq);
        for (int u = 0; u < 4; u++)
            Fq[u] = flags && g0 + u < r1 ? flags + (g0 + u) * 255 : NULL;
        quad_syndromes(Gq, NULL, Fq, powers, dmax, perm, phi, phi_inv, 1, Rp, NULL, NULL, 0);
        for (int64_t g = g0; g < g0 + 4 && g < r1; g++) {
            uint8_t *o = (uint8_t *)(acc + g * 4 * (int64_t)words);
            memset(o, 0, (size_t)32 * words);
            for (int t = 0; t < 4; t++)
                for (int b = 0; b < nblk && 16 * b < d[t]; b++) /* bytes past d_t stay zero */
                    memcpy(o + 8 * words * t + 16 * b, Rp[g - g0] + 64 * b + 16 * t, (size_t)(d[t] - 16 * b < 16 ? d[t] - 16 * b : 16));
        }
    }
    return 0;
}
#endif

/* ------------------------------------------------------------------ recovery (any CPU)
 * The gather with flags and the irs4 decoder, ported line for line from their numba references
 * (_strata_kernels._gather_nb, _irs_kernels._decode_group and helpers), so that a lightly tampered model is
 * recovered without loading any numba kernel. tests/test_native.py compares the two on random
 * damage: the same words and the same statuses. */

/* The words (and flags) of stream range [t0, t1) (one tensor, flat values src; NULL: padding) that
 * runs of groups hold, into w ([rows][255], position order) and fl: as _strata_kernels._gather_nb. runs:
 * nruns rows (first group, groups, first row); ipermt: [255][nperm] position of stratum j under
 * permutation p; bad: the tensor's failed blocks (nb blocks, the last internal if li, the first rs
 * reserved). Returns the stream index of the first NaN/Inf word when seal, else -1. */
int64_t ps_gather_runs(const int64_t *runs, int64_t nruns, int64_t G, const int64_t *offs, const int64_t *ipermt,
                       int64_t nperm, int64_t t0, int64_t t1, const uint32_t *src, const uint8_t *bad, int64_t nb, int li,
                       int64_t rs, const uint8_t *tagb, int freeb, uint32_t keep, int seal, int want_flags, uint32_t *w,
                       uint8_t *fl)
{
    for (int64_t ri = 0; ri < nruns; ri++) {
        const int64_t g0 = runs[3 * ri], ng = runs[3 * ri + 1], r0 = runs[3 * ri + 2];
        for (int64_t a = 0; a < ng; a += 128) { /* tiles of 128 groups: their rows of w stay in cache */
            const int64_t b = ng < a + 128 ? ng : a + 128;
            for (int64_t j = t0 / G; j <= (t1 - 1) / G; j++) {
                const int64_t ws = (g0 + a + offs[j]) % G; /* the tile's words in stratum j, wrapping */
                const int64_t seg[2][3] = {{ws, G < ws + b - a ? G : ws + b - a, a}, {0, ws + b - a - G, a + G - ws}};
                for (int sgi = 0; sgi < 2; sgi++) {
                    const int64_t s0 = seg[sgi][0], s1 = seg[sgi][1], i0 = seg[sgi][2];
                    const int64_t lo = j * G + s0 > t0 ? j * G + s0 : t0, hi = j * G + s1 < t1 ? j * G + s1 : t1;
                    if (lo >= hi)
                        continue;
                    int64_t i = i0 + lo - j * G - s0, p = (g0 + i) % nperm;
                    for (int64_t x = lo; x < hi; x++) {
                        const int64_t row = r0 + i, pos = ipermt[j * nperm + p];
                        i++;
                        if (++p == nperm)
                            p = 0;
                        if (!src) {
                            if (want_flags)
                                fl[row * 255 + pos] = (uint8_t)(0x20 | freeb);
                            continue;
                        }
                        const int64_t local = x - t0;
                        const uint32_t word = src[local];
                        if (seal && ((word >> 23) & 0xFF) == 0xFF)
                            return x;
                        w[row * 255 + pos] = word & keep;
                        if (want_flags) {
                            const int64_t blk = local / 64;
                            int f = bad[blk] ? 0x10 : 0;
                            if (blk != nb - 1 || li)
                                f |= tagb[local % 64];
                            if (blk < rs)
                                f |= freeb;
                            fl[row * 255 + pos] = (uint8_t)f;
                        }
                    }
                }
            }
        }
    }
    return -1;
}

#define D_NMAX 258
#define D_FIXED 0x0F
#define D_BAD 0x10
#define D_PAD 0x20
#define D_ERASE_DIRECT 8
enum { D_CLEAN = 0, D_CORRECTED = 1, D_TOO_MANY = -1, D_ROOT_COUNT = -2, D_ROOT_LOCATION = -3, D_INCONSISTENT = -4 };

/* GF(2^8) mod 0x11d as _irs_consts._gf_tables: LOG[0] = 512 and EXP[>= 510] = 0 make products branch-free. */
static int32_t EXP[1040], LOG[256];

/* MULNIB[c][0][x] = c x and MULNIB[c][1][x] = c (x << 4) in GF(2^8) mod 0x11d, x < 16: a product by c
 * is two 16-entry lookups (one byte shuffle each, 16 bytes at a time) */
static uint8_t MULNIB[256][2][16];

/* FIXED_PER_T[j & 3][fx]: the fixed bytes fx of word j counted per codeword t = (b - j) & 3, 16 bits each */
static uint64_t FIXED_PER_T[4][16];

/* APOW[i][j] = alpha^(-i j) for j < 255 (APOW[i][255] = 0): the Chien search evaluates a locator of
 * degree L <= 255 at every alpha^-j by L + 1 rows of these, 16 entries at a time */
static uint8_t APOW[256][256];

__attribute__((constructor)) static void gf_tables(void)
{
    for (int r = 0; r < 4; r++)
        for (int fx = 0; fx < 16; fx++)
            for (int b = 0; b < 4; b++)
                if ((fx >> b) & 1)
                    FIXED_PER_T[r][fx] += (uint64_t)1 << (16 * ((b - r) & 3));
    int x = 1;
    for (int i = 0; i < 256; i++)
        LOG[i] = 512;
    for (int i = 0; i < 255; i++) {
        EXP[i] = EXP[i + 255] = x;
        LOG[x] = i;
        x <<= 1;
        if (x & 0x100)
            x ^= 0x11d;
    }
    for (int i = 0; i < 256; i++)
        for (int j = 0; j < 255; j++)
            APOW[i][j] = (uint8_t)EXP[i * ((255 - j) % 255) % 255];
    for (int c = 0; c < 256; c++)
        for (int v = 0; v < 16; v++) {
            MULNIB[c][0][v] = (uint8_t)EXP[LOG[c] + LOG[v]];
            MULNIB[c][1][v] = (uint8_t)EXP[LOG[c] + LOG[v << 4]];
        }
}

#define D_FRONT 256 /* zeros before each codeword's syndromes: products read S_(i - k) for k > i */
typedef struct { /* _irs_kernels._scratch (S as bytes, D_FRONT zeros first, then slack for 16-byte reads) */
    uint8_t S[4][D_FRONT + 256 + 16];
    int32_t pos[4][256], val[4][256], npos[4], u[4][D_NMAX], nlen[4];
    int32_t lam[D_NMAX], llam[D_NMAX], psi[D_NMAX], om[D_NMAX], lpsi[D_NMAX], ers[4], B[4][D_NMAX], tmp[D_NMAX];
    int32_t bd[4], nt[4], LB[4], ordr[4];
    int32_t bad[256]; /* the entries flagged bad and not padding, in order (where errors-only looks for roots) */
    int32_t fxd[256], any[256], nfxd, nany; /* those with fixed bytes; with fixed bytes or bad (d_erasures' words) */
} dscratch;

/* out[i] = sum_(k <= min(i, n)) c[k] S_(i - k) for i < len (GF(2^8) mod 0x11d): the product of the
 * polynomial c (n + 1 coefficients) and the syndromes, cut at len <= 256. sb points at S_0, with
 * D_FRONT zeros before it; bytes past len only reach out[>= len], which may hold anything. out:
 * len rounded up to 16. Each 16 outputs are summed in a register (a store per k would stall). */
#if defined(__GNUC__) && !defined(__clang__)
typedef uint8_t d_v16 __attribute__((vector_size(16)));
CLONES static void d_product(const int32_t *c, int n, const uint8_t *sb, int len, uint8_t *out)
{
    for (int x = 0; x < len; x += 16) {
        d_v16 acc = {0};
        for (int k = 0; k <= n && k <= x + 15; k++) {
            if (!c[k])
                continue;
            d_v16 lo, hi, v;
            memcpy(&lo, MULNIB[c[k]][0], 16);
            memcpy(&hi, MULNIB[c[k]][1], 16);
            memcpy(&v, sb + x - k, 16);
            acc ^= __builtin_shuffle(lo, v & 15) ^ __builtin_shuffle(hi, v >> 4);
        }
        memcpy(out + x, &acc, 16);
    }
}
#else
static void d_product(const int32_t *c, int n, const uint8_t *sb, int len, uint8_t *out)
{
    for (int i = 0; i < len; i++) {
        int v = 0;
        for (int k = 0; k <= n && k <= i; k++)
            v ^= MULNIB[c[k]][0][sb[i - k] & 15] ^ MULNIB[c[k]][1][sb[i - k] >> 4];
        out[i] = (uint8_t)v;
    }
}
#endif

static void d_locator(const int32_t *pos, int n, int32_t *psi)
{
    psi[0] = 1;
    for (int i = 1; i <= n; i++)
        psi[i] = 0;
    for (int k = 0; k < n; k++)
        for (int i = k + 1; i > 0; i--)
            psi[i] ^= EXP[LOG[psi[i - 1]] + pos[k]];
}

static inline int d_eval_inv(const int32_t *lt, int deg, int j)
{
    const int lx = (255 - j) % 255;
    int e = 0, val = EXP[lt[0]];
    for (int i = 1; i <= deg; i++) {
        e += lx;
        if (e >= 255)
            e -= 255;
        val ^= EXP[lt[i] + e];
    }
    return val;
}

/* ev[j] = lam(alpha^-j) for j < 255 (lam: L + 1 coefficients, L <= 255), what d_eval_inv gives from
 * their logs; ev: 256 bytes. */
#if defined(__GNUC__) && !defined(__clang__)
CLONES static void d_chien(const int32_t *lam, int L, uint8_t *ev)
{
    for (int x = 0; x < 256; x += 16) {
        d_v16 acc = {0};
        for (int i = 0; i <= L; i++) {
            if (!lam[i])
                continue;
            d_v16 lo, hi, v;
            memcpy(&lo, MULNIB[lam[i]][0], 16);
            memcpy(&hi, MULNIB[lam[i]][1], 16);
            memcpy(&v, APOW[i] + x, 16);
            acc ^= __builtin_shuffle(lo, v & 15) ^ __builtin_shuffle(hi, v >> 4);
        }
        memcpy(ev + x, &acc, 16);
    }
}
#else
static void d_chien(const int32_t *lam, int L, uint8_t *ev)
{
    int32_t lt[256];
    for (int i = 0; i <= L; i++)
        lt[i] = LOG[lam[i]];
    for (int j = 0; j < 255; j++)
        ev[j] = (uint8_t)d_eval_inv(lt, L, j);
}
#endif

static int d_multi_bm(dscratch *s, int lmax)
{
    int32_t *lam = s->lam, *llam = s->llam; /* llam: LOG of lam, kept for the discrepancies (most steps) */
    for (int i = 1; i < lmax + 2; i++)
        lam[i] = 0, llam[i] = LOG[0];
    lam[0] = 1, llam[0] = 0;
    int L = 0, nmax = 0;
    for (int t = 0; t < 4; t++) {
        s->B[t][0] = 1;
        s->bd[t] = 1;
        s->nt[t] = -1;
        s->LB[t] = 0;
        s->ordr[t] = t;
        nmax = nmax > s->nlen[t] ? nmax : s->nlen[t];
    }
    for (int a = 1; a < 4; a++) { /* stable sort, longest first */
        int x = s->ordr[a], i = a;
        while (i > 0 && s->nlen[s->ordr[i - 1]] < s->nlen[x]) {
            s->ordr[i] = s->ordr[i - 1];
            i--;
        }
        s->ordr[i] = x;
    }
    for (int n = 0; n < nmax; n++)
        for (int tt = 0; tt < 4; tt++) {
            const int t = s->ordr[tt];
            if (n >= s->nlen[t])
                continue;
            int dsc = 0;
            for (int i = 0; i <= (L < n ? L : n); i++)
                dsc ^= EXP[llam[i] + s->u[t][n - i]];
            if (dsc == 0)
                continue;
            const int m = n - s->nt[t], lnew = L > s->LB[t] + m ? L : s->LB[t] + m;
            if (lnew > lmax)
                return D_NMAX;
            if (lnew > L)
                for (int i = 0; i <= L; i++)
                    s->tmp[i] = lam[i];
            const int lc = (LOG[dsc] + 255 - LOG[s->bd[t]]) % 255;
            for (int i = 0; i <= s->LB[t]; i++) {
                lam[i + m] ^= EXP[LOG[s->B[t][i]] + lc];
                llam[i + m] = LOG[lam[i + m]];
            }
            if (lnew > L) {
                for (int i = 0; i <= L; i++)
                    s->B[t][i] = s->tmp[i];
                s->bd[t] = dsc;
                s->nt[t] = n;
                s->LB[t] = L;
                L = lnew;
            }
        }
    return L;
}

static void d_erasures(const uint8_t *fl, int erase_bad, dscratch *s)
{
    for (int t = 0; t < 4; t++)
        s->npos[t] = 0;
    const int32_t *js = erase_bad ? s->any : s->fxd; /* the words the loop below acts on, in order */
    const int nj = erase_bad ? s->nany : s->nfxd;
    for (int r = 0; r < nj; r++) {
        const int j = js[r], f = fl[j];
        int fx = f & D_FIXED;
        if (erase_bad && (f & D_BAD) && !(f & D_PAD))
            fx = 15;
        if (!fx) /* most words: no per-byte loop */
            continue;
        for (int b = 0; b < 4; b++)
            if ((fx >> b) & 1) {
                const int t = (b - j) & 3;
                s->pos[t][s->npos[t]++] = j;
            }
    }
}

static int d_locate_errors(const uint8_t *fl, int nbad, const int64_t *d, int cap, dscratch *s)
{
    for (int t = 0; t < 4; t++) {
        const int e = s->npos[t];
        if (e > d[t])
            return D_TOO_MANY;
        s->nlen[t] = (int)d[t] - e;
        d_locator(s->pos[t], e, s->psi);
        uint8_t prod[256];
        d_product(s->psi, e, s->S[t] + D_FRONT, (int)d[t], prod);
        for (int i = e; i < d[t]; i++) /* Forney syndromes: the erasures taken out */
            s->u[t][i - e] = LOG[prod[i]];
    }
    int lmax = 0;
    for (;;) { /* the radius: largest L with sum_t max(nlen_t - L, 0) >= L */
        int tot = 0;
        for (int t = 0; t < 4; t++)
            tot += s->nlen[t] - lmax - 1 > 0 ? s->nlen[t] - lmax - 1 : 0;
        if (tot < lmax + 1)
            break;
        lmax++;
    }
    lmax = lmax < cap ? lmax : cap;
    const int L = d_multi_bm(s, lmax);
    if (L > lmax)
        return D_TOO_MANY;
    if (L == 0)
        return 0;
    uint8_t ev[256];
    d_chien(s->lam, L, ev);
    int nr = 0;
    for (int r = 0; r < nbad; r++) { /* every root must be a flagged entry: count only those (no branch per entry) */
        const int j = s->bad[r];
        if (ev[j] == 0) {
            const int fx = fl[j] & D_FIXED;
            for (int t = 0; t < 4; t++)
                if (!((fx >> ((t + j) & 3)) & 1))
                    s->pos[t][s->npos[t]++] = j;
            nr++;
        }
    }
    if (nr != L) {
        int nall = 0;
        for (int j = 0; j < 255; j++)
            nall += ev[j] == 0;
        return nall == L ? D_ROOT_LOCATION : D_ROOT_COUNT;
    }
    return 0;
}

static int d_forney(const int64_t *d, const int64_t *first, dscratch *s)
{
    for (int t = 0; t < 4; t++) {
        const int n = s->npos[t];
        if (n > d[t])
            return D_TOO_MANY;
        d_locator(s->pos[t], n, s->psi);
        for (int k = 0; k <= n; k++)
            s->lpsi[k] = LOG[s->psi[k]];
        uint8_t prod[256];
        d_product(s->psi, n, s->S[t] + D_FRONT, (int)d[t], prod);
        for (int i = 0; i < d[t]; i++) { /* Omega = S Psi mod x^d must vanish above deg Psi */
            if (i < n)
                s->om[i] = LOG[prod[i]];
            else if (prod[i] != 0)
                return D_INCONSISTENT;
        }
        const int e1b = (int)((256 - first[t]) % 255); /* Forney factor X^(1 - b) */
        for (int r = 0; r < n; r++) {
            const int j = s->pos[t][r], lxi = (255 - j) % 255;
            int num = EXP[s->om[0]], e = 0;
            for (int i = 1; i < n; i++) {
                e += lxi;
                if (e >= 255)
                    e -= 255;
                num ^= EXP[s->om[i] + e];
            }
            int den = EXP[s->lpsi[1]];
            e = 0;
            for (int i = 3; i <= n; i += 2) {
                e += 2 * lxi; /* (e + 2 lxi) % 255: below 3 * 255 */
                e -= e >= 255 ? 255 : 0;
                e -= e >= 255 ? 255 : 0;
                den ^= EXP[s->lpsi[i] + e];
            }
            if (den == 0)
                return D_INCONSISTENT;
            s->val[t][r] = num ? EXP[(LOG[num] + 255 - LOG[den] + j * e1b) % 255] : 0;
        }
    }
    return 0;
}

static int d_apply(uint32_t *wg, const uint8_t *fl, const dscratch *s)
{
    int changed = 0;
    for (int t = 0; t < 4; t++)
        for (int r = 0; r < s->npos[t]; r++) {
            const int j = s->pos[t][r], b = (t + j) & 3;
            const uint32_t y = (uint32_t)s->val[t][r] << (8 * b);
            if ((fl[j] >> b) & 1)
                wg[j] = (wg[j] & ~(0xFFu << (8 * b))) | y;
            else if (y) {
                wg[j] ^= y;
                changed = 1;
            }
        }
    return changed ? D_CORRECTED : D_CLEAN;
}

static int d_group(uint32_t *wg, const uint8_t *fl, const uint64_t *acc, int words, const int64_t *d,
                   const int64_t *first, dscratch *s)
{
    int nbad = 0, nfix = 0, nany = 0;
    uint64_t fixed = 0; /* fixed bytes of unflagged words per codeword, 16 bits each: no branch per word */
    for (int j = 0; j < 255; j++) {
        const int f = fl[j], fx = f & D_FIXED, bad = (f & (D_BAD | D_PAD)) == D_BAD;
        s->bad[nbad] = j; /* kept when bad: a store, not a branch */
        nbad += bad;
        s->fxd[nfix] = s->any[nany] = j;
        nany += (fx != 0) | bad;
        fixed += FIXED_PER_T[j & 3][bad ? 0 : fx];
        nfix += fx != 0;
    }
    s->nfxd = nfix, s->nany = nany;
    for (int t = 0; t < 4; t++)
        s->ers[t] = nbad + (int)((fixed >> (16 * t)) & 0xFFFF);
    if (nbad == 0 && nfix == 0) {
        for (int i = 0; i < 4 * words; i++)
            if (acc[i])
                return D_INCONSISTENT;
        return D_CLEAN;
    }
    for (int t = 0; t < 4; t++) /* syndrome i is byte i & 7 of word i >> 3: the words' bytes in order */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(s->S[t] + D_FRONT, acc + t * words, (size_t)d[t]);
#else
        for (int i = 0; i < d[t]; i++)
            s->S[t][D_FRONT + i] = (uint8_t)(acc[t * words + (i >> 3)] >> (8 * (i & 7)));
#endif
    int fits = 1;
    for (int t = 0; t < 4; t++)
        fits &= s->ers[t] <= d[t];
    if (!fits || nbad > D_ERASE_DIRECT) { /* a cheap errors-only attempt first: its cost follows the damage */
        d_erasures(fl, 0, s);
        int res = d_locate_errors(fl, nbad, d, fits ? nbad / 2 : D_NMAX, s);
        if (res == 0)
            res = d_forney(d, first, s);
        if (res == 0)
            return d_apply(wg, fl, s);
        if (!fits)
            return res;
    }
    d_erasures(fl, 1, s);
    const int res = d_forney(d, first, s);
    return res ? res : d_apply(wg, fl, s);
}

/* _irs.decode of groups [r0, r1) of W ([ng][255]) with their flags and packed syndromes acc
 * ([4 ng][words], from ps_irs_syndromes): corrects W in place, status per group. Returns -1
 * when the code's d_t are out of range or no scratch could be allocated, else 0. */
int ps_irs_decode(uint32_t *W, const uint8_t *flags, int64_t r0, int64_t r1, const uint64_t *acc, int words,
                  const int64_t *d, const int64_t *first, int8_t *status)
{
    for (int t = 0; t < 4; t++)
        if (d[t] < 0 || d[t] > 8 * words || d[t] > 255 || first[t] < 0 || first[t] > 254)
            return -1;
    dscratch *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    for (int64_t g = r0; g < r1; g++)
        status[g] = (int8_t)d_group(W + 255 * g, flags + 255 * g, acc + 4 * words * g, words, d, first, s);
    free(s);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The lane code's data movers, ported from their numba references in _kernels.py so that a lane-code
 * model (fp16, bf16, fp64, light) is verified, sealed and lightly recovered without loading numba
 * (about a second per process) and with rows split over the cores. Strides are in elements;
 * tests/test_native.py compares each with its reference bit for bit. */

/* _pack_nb_py: bits [shift, shift + width) of every value of u (rows [r0, r1) of n values of size
 * bytes, ld values apart), LSB first, into out (width * n / 8 bytes a row). width <= 56. */
#define PACK_ROWS(T)                                                                                   \
    for (int64_t b = r0; b < r1; b++) {                                                                \
        const T *row = (const T *)u + b * ld;                                                          \
        uint8_t *o = out + b * ob;                                                                     \
        uint64_t acc = 0;                                                                              \
        int nbits = 0;                                                                                 \
        if (width <= 32) { /* 4 bytes at a time: below 32 bits held, plus one field, fits 64 */       \
            for (int j = 0; j < n; j++) {                                                              \
                acc |= (((uint64_t)row[j] >> shift) & mask) << nbits;                                  \
                nbits += width;                                                                        \
                if (nbits >= 32) {                                                                     \
                    uint32_t lo = (uint32_t)acc;                                                       \
                    memcpy(o, &lo, 4);                                                                 \
                    o += 4, acc >>= 32, nbits -= 32;                                                   \
                }                                                                                      \
            }                                                                                          \
        } else {                                                                                       \
            for (int j = 0; j < n; j++) {                                                              \
                acc |= (((uint64_t)row[j] >> shift) & mask) << nbits;                                  \
                for (nbits += width; nbits >= 8; nbits -= 8, acc >>= 8)                                \
                    *o++ = (uint8_t)acc;                                                               \
            }                                                                                          \
        }                                                                                              \
        for (; nbits > 0; nbits -= 8, acc >>= 8) /* the row's bits are whole bytes */                 \
            *o++ = (uint8_t)acc;                                                                       \
    }

/* A block of 64 16-bit values with a field of W < 16 bits: W is a constant at each call site (the
 * switch below), so the loop unrolls with every shift and store known: the 16-bit models' high and
 * low bits, about 3x the general loop. The row's 64 W bits are W whole 8-byte words. */
static inline __attribute__((always_inline)) void pack16_row(const uint16_t *row, int shift, const int W, uint8_t *o)
{
    const uint64_t mask = (1ull << W) - 1;
    uint64_t acc = 0;
    int nbits = 0;
#pragma GCC unroll 64
    for (int j = 0; j < 64; j++) {
        uint64_t v = ((uint64_t)row[j] >> shift) & mask;
        acc |= v << nbits; /* nbits < 64 here */
        nbits += W;
        if (nbits >= 64) {
            memcpy(o, &acc, 8);
            o += 8, nbits -= 64;
            acc = v >> (W - nbits); /* the field's bits that did not fit (none: v >> W is 0) */
        }
    }
}

static inline __attribute__((always_inline)) void unpack16_row(const uint8_t *p, int shift, const int W, uint16_t *row)
{
    const uint64_t mask = (1ull << W) - 1;
    const uint16_t keep = (uint16_t)~(mask << shift);
    uint64_t cur;
    memcpy(&cur, p, 8);
    p += 8;
    int avail = 64; /* bits of cur not yet used; a load happens only for bits the row still holds */
#pragma GCC unroll 64
    for (int j = 0; j < 64; j++) {
        uint64_t v;
        if (avail >= W) {
            v = cur & mask, cur >>= W, avail -= W;
        } else {
            uint64_t next;
            memcpy(&next, p, 8);
            p += 8;
            v = (cur | next << avail) & mask;
            cur = next >> (W - avail), avail = 64 - (W - avail);
        }
        row[j] = (uint16_t)((row[j] & keep) | (v << shift));
    }
}

#define CASES16(F)                                                                              \
    switch (width) {                                                                                 \
    case 1: F(1); break;                                                                \
    case 2: F(2); break;                                                                \
    case 3: F(3); break;                                                                \
    case 4: F(4); break;                                                                \
    case 5: F(5); break;                                                                \
    case 6: F(6); break;                                                                \
    case 7: F(7); break;                                                                \
    case 8: F(8); break;                                                                \
    case 9: F(9); break;                                                                \
    case 10: F(10); break;                                                              \
    case 11: F(11); break;                                                              \
    case 12: F(12); break;                                                              \
    case 13: F(13); break;                                                              \
    case 14: F(14); break;                                                              \
    default: F(15); break;                                                              \
    }
#define PACK16(W)                                                                                    \
    for (int64_t b = r0; b < r1; b++)                                                                \
        pack16_row((const uint16_t *)u + b * ld, shift, W, out + b * 8 * W);
#define UNPACK16(W)                                                                                  \
    for (int64_t b = r0; b < r1; b++)                                                                \
        unpack16_row(data + b * 8 * W, shift, W, (uint16_t *)u + b * ld);

#ifdef X86
/* ps_pack of a row of 64 values of size bytes (2 or 4): the fields of the 8 / size values in each 8 bytes
 * gathered by one pext with the mask m (q bits: W of each), the row's 64 W bits written as W 8-byte words.
 * Inlined with constant arguments, every shift is constant too (pack16_pext). Only with the vector paths:
 * the CPUs with AVX-512 have a fast pext (the AMD ones before, microcoded, took hundreds of cycles). As
 * pack16_row and PACK_ROWS (tests compare). */
static inline __attribute__((always_inline, target("bmi2"))) void pext_row(const uint8_t *row, int size, uint64_t m,
                                                                          int q, uint8_t *o)
{
    uint64_t acc = 0;
    int nbits = 0;
#pragma GCC unroll 16
    for (int j = 0; j < 64 * size; j += 8) {
        uint64_t x;
        memcpy(&x, row + j, 8);
        const uint64_t v = _pext_u64(x, m);
        acc |= v << nbits; /* nbits < 64 */
        nbits += q;
        if (nbits >= 64) {
            memcpy(o, &acc, 8);
            o += 8, nbits -= 64;
            acc = v >> (q - nbits); /* q < 64: the bits that did not fit (none when nbits is 0) */
        }
    }
}

/* 16-bit values: 4 fields a pext (4 W bits); W is a constant at each call (the switch). */
#define PEXT16(W)                                                                                    \
    for (int64_t b = r0; b < r1; b++)                                                                \
        pext_row((const uint8_t *)(u + b * ld), 2, (((1ull << W) - 1) << shift) * 0x0001000100010001ull, 4 * W, \
                 out + b * 8 * W);

__attribute__((target("bmi2"))) static void pack16_pext(const uint16_t *u, int64_t ld, int64_t r0, int64_t r1,
                                                        int shift, int width, uint8_t *out)
{
    CASES16(PEXT16)
}

/* 32-bit values: 2 fields a pext (2 W bits, below 64), W not a constant: about 1.7 times the plain loop's
 * speed (benchmarks/bench_sealed_check.py), where seal's check packs the low bits of 53M values a GiB. */
__attribute__((target("bmi2"))) static void pack32_pext(const uint32_t *u, int64_t ld, int64_t r0, int64_t r1,
                                                        int shift, int W, uint8_t *out)
{
    const uint64_t m = (((1ull << W) - 1) << shift) * 0x0000000100000001ull;
    for (int64_t b = r0; b < r1; b++)
        pext_row((const uint8_t *)(u + b * ld), 4, m, 2 * W, out + b * 8 * W);
}
#endif

void ps_pack(const void *u, int size, int64_t ld, int64_t r0, int64_t r1, int n, int shift, int width, uint8_t *out)
{
    const uint64_t mask = (1ull << width) - 1;
    const int64_t ob = (int64_t)width * n / 8;
#ifdef X86
    if (size == 2 && n == 64 && width < 16 && shift + width <= 16 && vec_on() && have_bmi2()) {
        pack16_pext((const uint16_t *)u, ld, r0, r1, shift, width, out);
        return;
    }
    if (size == 4 && n == 64 && width < 32 && shift + width <= 32 && vec_on() && have_bmi2()) {
        pack32_pext((const uint32_t *)u, ld, r0, r1, shift, width, out);
        return;
    }
#endif
    if (size == 2 && n == 64 && width < 16) {
        CASES16(PACK16)
        return;
    }
    if (size == 2)
        PACK_ROWS(uint16_t)
    else if (size == 4)
        PACK_ROWS(uint32_t)
    else
        PACK_ROWS(uint64_t)
}

/* Where the bytes pat (plen of them) first lie at storage offset from or past it, in the storage of the blocks
 * [0, nb) of u ([nb][64] values of size bytes): each block's low k bits packed as by ps_pack, less its first
 * skip bytes (the tag), the blocks' storage end to end. -1 where nowhere, -2 where out of memory, -3 for bad
 * arguments (k outside 1..56 or past the values' width). As bytes.find over `_embed._storage` (tests compare),
 * for `_embed_find.copies_located`: the words are read once and no storage is kept, FIND_CHUNK blocks at a
 * time (the last plen - 1 bytes carried to the next). */
#define FIND_CHUNK 256
int64_t ps_find_packed(const void *u, int size, int64_t nb, int k, int skip, const uint8_t *pat, int plen, int64_t from)
{
    const int64_t bb = 8 * (int64_t)k, sb = bb - skip; /* a block's packed bytes, and its storage */
    if (k < 1 || k > 56 || k > 8 * size || skip < 0 || sb <= 0 || plen <= 0)
        return -3;
    uint8_t *packed = malloc((size_t)(FIND_CHUNK * bb)), *stor = malloc((size_t)(plen + FIND_CHUNK * sb));
    int64_t found = packed && stor ? -1 : -2, base = 0; /* base: the storage offset of stor[0] */
    int64_t carry = 0;
    for (int64_t b0 = 0; b0 < nb && found == -1; b0 += FIND_CHUNK) {
        const int64_t m = nb - b0 < FIND_CHUNK ? nb - b0 : FIND_CHUNK;
        ps_pack((const uint8_t *)u + b0 * 64 * size, size, 64, 0, m, 64, 0, k, packed);
        for (int64_t b = 0; b < m; b++)
            memcpy(stor + carry + b * sb, packed + b * bb + skip, (size_t)sb);
        const int64_t len = carry + m * sb;
        for (int64_t i = from > base ? from - base : 0; i + plen <= len;) {
            const uint8_t *hit = memchr(stor + i, pat[0], (size_t)(len - plen + 1 - i));
            if (!hit)
                break;
            if (!memcmp(hit, pat, (size_t)plen)) {
                found = base + (hit - stor);
                break;
            }
            i = hit - stor + 1;
        }
        carry = len < plen - 1 ? len : plen - 1;
        memmove(stor, stor + len - carry, (size_t)carry);
        base += len - carry;
    }
    free(packed);
    free(stor);
    return found;
}

/* _unpack_nb_py: the inverse of ps_pack, replacing bits [shift, shift + width) of every value in place. */
#define UNPACK_ROWS(T)                                                                                 \
    for (int64_t b = r0; b < r1; b++) {                                                                \
        const uint8_t *p = data + b * ob, *end = p + ob;                                               \
        T *row = (T *)u + b * ld;                                                                      \
        uint64_t acc = 0;                                                                              \
        int nbits = 0;                                                                                 \
        for (int j = 0; j < n; j++) {                                                                  \
            if (nbits < width && nbits <= 32 && end - p >= 4) { /* 4 bytes, never past the row */      \
                uint32_t v;                                                                            \
                memcpy(&v, p, 4);                                                                      \
                acc |= (uint64_t)v << nbits;                                                           \
                p += 4, nbits += 32;                                                                   \
            }                                                                                          \
            for (; nbits < width; nbits += 8)                                                          \
                acc |= (uint64_t)*p++ << nbits;                                                        \
            row[j] = (T)((row[j] & keep) | ((acc & mask) << shift));                                   \
            acc >>= width, nbits -= width;                                                             \
        }                                                                                              \
    }

void ps_unpack(const uint8_t *data, int64_t r0, int64_t r1, int n, int shift, int width, void *u, int size, int64_t ld)
{
    const uint64_t mask = (1ull << width) - 1, keep = ~(mask << shift);
    const int64_t ob = (int64_t)width * n / 8;
#ifdef X86
    if (size == 2 && n == 64 && shift == 0 && width <= 2 && vec_on()) {
        unpack_lo16_avx512(data, r0, r1, width, (uint16_t *)u, ld);
        return;
    }
#endif
    if (size == 2 && n == 64 && width < 16) {
        CASES16(UNPACK16)
        return;
    }
    if (size == 2)
        UNPACK_ROWS(uint16_t)
    else if (size == 4)
        UNPACK_ROWS(uint32_t)
    else
        UNPACK_ROWS(uint64_t)
}

/* _split_nb_py: rows [r0, r1) of a ([n][lanes] words, strides sa0, sa1) into the leopard split
 * layout: the 16-bit element e of a row goes to bytes 64 (e / 32) + e % 32 (low) and + 32 (high)
 * of its row of out (ocols = 64 ceil(lanes / 16) bytes a row; the last chunk's unused bytes are zeroed). */
static inline void split_chunk(const uint32_t *src, int64_t sa1, int n, uint8_t *restrict dst)
{
    uint8_t buf[64] = {0}; /* a chunk built in registers, then stored whole */
    for (int k = 0; k < n; k++) {
        uint32_t v = src[k * sa1];
        buf[2 * k] = (uint8_t)v, buf[2 * k + 1] = (uint8_t)(v >> 16);
        buf[32 + 2 * k] = (uint8_t)(v >> 8), buf[33 + 2 * k] = (uint8_t)(v >> 24);
    }
    memcpy(dst, buf, 64);
}


/* ps_split's rows of contiguous words (the lane store's batches of lanes), whole chunks of 16: each
 * word's low (bytes 0, 2) and high (1, 3) halves as 16-bit values, a loop the clones vectorise (the
 * byte loop below: 0.21 s per 364 MB, as much as leopard's encode of it). */
CLONES static void split_rows1(const uint32_t *a, int64_t sa0, int64_t r0, int64_t r1, int64_t full, uint8_t *out,
                               int64_t ocols)
{
    for (int64_t i = r0; i < r1; i++) {
        const uint32_t *restrict row = a + i * sa0;
        uint8_t *restrict o = out + i * ocols;
        for (int64_t c = 0; c < full; c++) {
            uint16_t lo[16], hi[16];
            for (int k = 0; k < 16; k++) {
                uint32_t x = row[16 * c + k], l = x & 0x00ff00ffu, h = (x >> 8) & 0x00ff00ffu;
                lo[k] = (uint16_t)(l | l >> 8), hi[k] = (uint16_t)(h | h >> 8);
            }
            memcpy(o + 64 * c, lo, 32);
            memcpy(o + 64 * c + 32, hi, 32);
        }
    }
}

void ps_split(const uint32_t *a, int64_t sa0, int64_t sa1, int64_t r0, int64_t r1, int64_t lanes, uint8_t *out,
              int64_t ocols)
{
    const int64_t full = lanes / 16;
    const int rest = (int)(lanes % 16);
    if (sa1 == 1) {
        split_rows1(a, sa0, r0, r1, full, out, ocols);
        if (rest)
            for (int64_t i = r0; i < r1; i++)
                split_chunk(a + i * sa0 + 16 * full, 1, rest, out + i * ocols + 64 * full);
        return;
    }
    for (int64_t i = r0; i < r1; i++) {
        const uint32_t *row = a + i * sa0;
        uint8_t *o = out + i * ocols;
        for (int64_t c = 0; c < full; c++)
            split_chunk(row + 16 * c * sa1, sa1, 16, o + 64 * c);
        if (rest)
            split_chunk(row + 16 * full * sa1, sa1, rest, o + 64 * full);
    }
}

/* _stripes_in_nb (out = 0) and _stripes_out_nb (out = 1), stripes [s0, s1): store[off + s d + i,
 * perm[s][j]] is x[s][j][i] (x: [stripes][lanes][d], strides xs0, xs1, xs2; store: ss0, ss1). */
void ps_stripes(uint32_t *store, int64_t ss0, int64_t ss1, int64_t off, int64_t d, const int64_t *perm, int64_t g,
                int64_t s0, int64_t s1, uint32_t *x, int64_t xs0, int64_t xs1, int64_t xs2, int out)
{
    if (ss1 == 1 && !out) { /* rows of the store are contiguous: write them a tile of 64 lanes at a time */
        int64_t *inv = malloc(sizeof(int64_t) * (size_t)g);
        if (inv) {
            for (int64_t s = s0; s < s1; s++) {
                uint32_t *base = store + (off + s * d) * ss0;
                const uint32_t *xs = x + s * xs0;
                for (int64_t j = 0; j < g; j++)
                    inv[perm[s * g + j]] = j * xs1;
                for (int64_t l0 = 0; l0 < g; l0 += 64) {
                    int64_t l1 = l0 + 64 < g ? l0 + 64 : g;
                    for (int64_t i = 0; i < d; i++) {
                        uint32_t *row = base + i * ss0;
                        for (int64_t lane = l0; lane < l1; lane++)
                            row[lane] = xs[inv[lane] + i * xs2];
                    }
                }
            }
            free(inv);
            return;
        }
    }
    for (int64_t s = s0; s < s1; s++) {
        uint32_t *base = store + (off + s * d) * ss0;
        for (int64_t j = 0; j < g; j++) {
            uint32_t *col = base + perm[s * g + j] * ss1, *xj = x + s * xs0 + j * xs1;
            if (out)
                for (int64_t i = 0; i < d; i++)
                    xj[i * xs2] = col[i * ss0];
            else
                for (int64_t i = 0; i < d; i++)
                    col[i * ss0] = xj[i * xs2];
        }
    }
}

/* _blocks_in_nb (out = 0) and _blocks_out_nb (out = 1), blocks [b0, b1): store[offs[b] + i,
 * lanes[b]] is x[b][i] for i < counts[b] (x strides xs0, xs1). */
void ps_blocks(uint32_t *store, int64_t ss0, int64_t ss1, const int64_t *offs, const int64_t *lanes,
               const int64_t *counts, int64_t b0, int64_t b1, uint32_t *x, int64_t xs0, int64_t xs1, int out)
{
    for (int64_t b = b0; b < b1; b++) {
        uint32_t *col = store + offs[b] * ss0 + lanes[b] * ss1, *xb = x + b * xs0;
        if (out)
            for (int64_t i = 0; i < counts[b]; i++)
                xb[i * xs1] = col[i * ss0];
        else
            for (int64_t i = 0; i < counts[b]; i++)
                col[i * ss0] = xb[i * xs1];
    }
}

/* np.argsort(keys, axis=1, kind="stable") for rows [r0, r1) of keys ([rows][g] uint64), into out: the
 * lane code's keyed permutations. A stable LSD radix sort of (key, index) pairs on the top 33 bits (three
 * 11-bit digits), then each run of equal top bits (rare for random keys) sorted by the whole key, stably,
 * by insertion. Returns -1 if it cannot allocate its buffers (the caller uses numpy), else 0. */
int ps_argsort_rows(const uint64_t *keys, int64_t r0, int64_t r1, int64_t g, int64_t *out)
{
    size_t n = (size_t)(g > 0 ? g : 1);
    uint64_t *k0 = malloc(sizeof(uint64_t) * n), *k1 = malloc(sizeof(uint64_t) * n);
    int64_t *i0 = malloc(sizeof(int64_t) * n), *i1 = malloc(sizeof(int64_t) * n);
    uint32_t *cnt = malloc(sizeof(uint32_t) * 2048);
    if (!k0 || !k1 || !i0 || !i1 || !cnt) {
        free(k0), free(k1), free(i0), free(i1), free(cnt);
        return -1;
    }
    for (int64_t r = r0; r < r1; r++) {
        uint64_t *ka = k0, *kb = k1;
        int64_t *ia = i0, *ib = i1;
        memcpy(ka, keys + r * g, sizeof(uint64_t) * (size_t)g);
        for (int64_t j = 0; j < g; j++)
            ia[j] = j;
        for (int shift = 31; shift <= 53; shift += 11) { /* digits of bits 31-41, 42-52, 53-63 */
            memset(cnt, 0, sizeof(uint32_t) * 2048);
            for (int64_t j = 0; j < g; j++)
                cnt[(ka[j] >> shift) & 2047]++;
            uint32_t sum = 0;
            for (int d = 0; d < 2048; d++) {
                uint32_t c = cnt[d];
                cnt[d] = sum;
                sum += c;
            }
            for (int64_t j = 0; j < g; j++) {
                uint32_t at = cnt[(ka[j] >> shift) & 2047]++;
                kb[at] = ka[j], ib[at] = ia[j];
            }
            uint64_t *tk = ka;
            int64_t *ti = ia;
            ka = kb, kb = tk, ia = ib, ib = ti;
        }
        for (int64_t j = 0; j < g;) { /* runs of equal top 33 bits, by the whole key */
            int64_t e = j + 1;
            while (e < g && (ka[e] >> 31) == (ka[j] >> 31))
                e++;
            for (int64_t x = j + 1; x < e; x++) {
                uint64_t kv = ka[x];
                int64_t iv = ia[x], y = x;
                while (y > j && ka[y - 1] > kv) /* strictly greater: equal keys keep index order */
                    ka[y] = ka[y - 1], ia[y] = ia[y - 1], y--;
                ka[y] = kv, ia[y] = iv;
            }
            j = e;
        }
        memcpy(out + r * g, ia, sizeof(int64_t) * (size_t)g);
    }
    free(k0), free(k1), free(i0), free(i1), free(cnt);
    return 0;
}

/* The outer code's parity (_outer.Outer.parity): reed-solomon-simd's high-rate encoder, which
 * rsl.encode runs, over GF(2^16) with GFNI; tests/test_outer_rs.py compares the two byte for byte.
 * A 64-byte piece of a shard holds 32 symbols, their low bytes then their high bytes. Times a
 * constant is GF(2)-linear on 16 bits: with lo in lanes 0-3 and hi in 4-7, x * c is
 * affine(x, [A_ll | A_hh]) ^ affine(swap(x), [A_lh | A_hl]), the 8x8 blocks of c's bit matrix
 * (_rs16.skew_matrices builds them per skew factor in Python; a zero factor's are zero, so its
 * butterfly is the XOR alone, as the crate's skip of the product). Each 64-byte column is its
 * own code, so one column at a time: a chunk of m pieces (16 KiB at m = 256) stays in L1 for
 * its whole IFFT, done two layers a pass as the crate does. */
#ifdef X86
typedef struct {
    __m512i p, q;
} rs_mat;

TARGET static inline rs_mat rs_mats(const uint64_t *t) /* stored [A_ll, A_hh, A_lh, A_hl] */
{
    const __m512i v = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)t));
    return (rs_mat){_mm512_permutexvar_epi64(_mm512_set_epi64(1, 1, 1, 1, 0, 0, 0, 0), v),
                    _mm512_permutexvar_epi64(_mm512_set_epi64(3, 3, 3, 3, 2, 2, 2, 2), v)};
}

TARGET static inline __m512i rs_mul(__m512i x, rs_mat m)
{
    const __m512i s = _mm512_shuffle_i64x2(x, x, 0x4E);
    return _mm512_xor_si512(_mm512_gf2p8affine_epi64_epi8(x, m.p, 0), _mm512_gf2p8affine_epi64_epi8(s, m.q, 0));
}

TARGET static inline void rs_ibf(__m512i *a, __m512i *b, rs_mat m) /* IFFT butterfly: b ^= a, a ^= b * m */
{
    *b = _mm512_xor_si512(*b, *a);
    *a = _mm512_xor_si512(*a, rs_mul(*b, m));
}

TARGET static inline void rs_fbf(__m512i *a, __m512i *b, rs_mat m) /* FFT butterfly: a ^= b * m, b ^= a */
{
    *a = _mm512_xor_si512(*a, rs_mul(*b, m));
    *b = _mm512_xor_si512(*b, *a);
}

/* In-place IFFT of m pieces with skew offset delta. Pieces from t on are zero, so groups that
 * start there stay zero and are skipped (the crate's truncated IFFT). */
TARGET static void rs_ifft(__m512i *d, int64_t m, int64_t t, int64_t delta, const uint64_t *mat)
{
    int64_t dist = 1;
    for (; 4 * dist <= m; dist *= 4)
        for (int64_t r = 0; r < t; r += 4 * dist) {
            const int64_t k = r + dist + delta - 1;
            const rs_mat m01 = rs_mats(mat + 4 * k), m02 = rs_mats(mat + 4 * (k + dist)),
                         m23 = rs_mats(mat + 4 * (k + 2 * dist));
            for (int64_t i = r; i < r + dist; i++) {
                __m512i s0 = d[i], s1 = d[i + dist], s2 = d[i + 2 * dist], s3 = d[i + 3 * dist];
                rs_ibf(&s0, &s1, m01), rs_ibf(&s2, &s3, m23);
                rs_ibf(&s0, &s2, m02), rs_ibf(&s1, &s3, m02);
                d[i] = s0, d[i + dist] = s1, d[i + 2 * dist] = s2, d[i + 3 * dist] = s3;
            }
        }
    if (dist < m) { /* an odd number of layers: the last alone */
        const rs_mat m1 = rs_mats(mat + 4 * (dist + delta - 1));
        for (int64_t i = 0; i < dist; i++)
            rs_ibf(&d[i], &d[i + dist], m1);
    }
}

/* In-place FFT of m pieces (skew offset 0); only the first t outputs are made. */
TARGET static void rs_fft(__m512i *d, int64_t m, int64_t t, const uint64_t *mat)
{
    int64_t dist4 = m;
    for (int64_t dist = m / 4; dist; dist4 = dist, dist /= 4)
        for (int64_t r = 0; r < t; r += dist4) {
            const int64_t k = r + dist - 1;
            const rs_mat m01 = rs_mats(mat + 4 * k), m02 = rs_mats(mat + 4 * (k + dist)),
                         m23 = rs_mats(mat + 4 * (k + 2 * dist));
            for (int64_t i = r; i < r + dist; i++) {
                __m512i s0 = d[i], s1 = d[i + dist], s2 = d[i + 2 * dist], s3 = d[i + 3 * dist];
                rs_fbf(&s0, &s2, m02), rs_fbf(&s1, &s3, m02);
                rs_fbf(&s0, &s1, m01), rs_fbf(&s2, &s3, m23);
                d[i] = s0, d[i + dist] = s1, d[i + 2 * dist] = s2, d[i + 3 * dist] = s3;
            }
        }
    if (dist4 == 2) /* an odd number of layers: the last alone */
        for (int64_t r = 0; r < t; r += 2)
            rs_fbf(&d[r], &d[r + 1], rs_mats(mat + 4 * r));
}

/* Parity of n shards (row i at data + i * stride, row_bytes of it, padded with zeros to whole
 * 64-byte columns): per column, the IFFT of each chunk of m = next_pow2(r) shards at skew
 * offset (chunk start + m) XORed together, then the FFT's first r; parity shard j's column c
 * goes to out + c * ocs + j * ojs (row_bytes of each shard). words: rows of 16-bit symbols (the
 * lane code's words), put in the split layout as they are loaded and back as they are stored.
 * Chunk by chunk, its rows read in order into a buffer of its columns, then each column's IFFT
 * (in L1: 16 KiB at m = 256). 0, or -1 without memory. */
TARGET static int rs_encode(const uint8_t *data, int64_t n, int64_t stride, int64_t row_bytes, int64_t r, int64_t m,
                            const uint64_t *mat, int words, uint8_t *out, int64_t ocs, int64_t ojs)
{
    const int64_t cols = (row_bytes + 63) / 64;
    __m512i *acc = aligned_alloc(64, (size_t)(2 * cols * m) * 64);
    if (acc == NULL)
        return -1;
    __m512i *buf = acc + cols * m;
    uint8_t to_split[64], to_words[64];
    for (int j = 0; j < 32; j++) /* split byte j: symbol j's low byte; j + 32: its high byte */
        to_split[j] = (uint8_t)(2 * j), to_split[j + 32] = (uint8_t)(2 * j + 1), to_words[2 * j] = (uint8_t)j,
        to_words[2 * j + 1] = (uint8_t)(j + 32);
    const __m512i ps = _mm512_loadu_si512(to_split), pw = _mm512_loadu_si512(to_words);
    const __mmask64 tail = row_bytes % 64 ? ((__mmask64)1 << (row_bytes % 64)) - 1 : ~(__mmask64)0;
    for (int64_t c0 = 0; c0 < n; c0 += m) {
        const int64_t t = n - c0 < m ? n - c0 : m;
        __m512i *w = c0 ? buf : acc; /* [cols][m] */
        for (int64_t i = 0; i < t; i++) { /* row by row: the rows may be far apart (the lane store's) */
            const uint8_t *src = data + (c0 + i) * stride;
            if (i + 4 < t) /* the rows 4 on: a seal's content was made a superblock's 12 MiB ago */
                for (int64_t c = 0; c < cols; c++)
                    __builtin_prefetch(src + 4 * stride + 64 * c, 0, 3);
            for (int64_t c = 0; c < cols; c++) {
                const __m512i v = _mm512_maskz_loadu_epi8(c == cols - 1 ? tail : ~(__mmask64)0, src + 64 * c);
                w[c * m + i] = words ? _mm512_permutexvar_epi8(ps, v) : v;
            }
        }
        for (int64_t c = 0; c < cols; c++) {
            for (int64_t i = t; i < m; i++)
                w[c * m + i] = _mm512_setzero_si512();
            rs_ifft(w + c * m, m, t, c0 + m, mat);
            if (c0)
                for (int64_t i = 0; i < m; i++)
                    acc[c * m + i] = _mm512_xor_si512(acc[c * m + i], buf[c * m + i]);
        }
    }
    for (int64_t c = 0; c < cols; c++) {
        const __mmask64 k = c == cols - 1 ? tail : ~(__mmask64)0;
        rs_fft(acc + c * m, m, r, mat);
        for (int64_t j = 0; j < r; j++) {
            const __m512i v = acc[c * m + j];
            _mm512_mask_storeu_epi8(out + c * ocs + j * ojs, k, words ? _mm512_permutexvar_epi8(pw, v) : v);
        }
    }
    free(acc);
    return 0;
}
#endif

/* Whether rs_encode serves r parity shards of n (high rate: r <= m <= n's power of two above,
 * and n + m within the field); m: r's power of two. */
static int rs_serves(int64_t n, int64_t r, int64_t *m)
{
    int64_t np2 = 1;
    *m = 1;
    while (*m < r)
        *m <<= 1;
    while (np2 < n)
        np2 <<= 1;
    return n >= 1 && r >= 1 && *m + n <= 65536 && np2 >= *m && !(np2 == *m && n > r);
}

/* rs_encode where this CPU has GFNI and AVX-512 and the shape is one it serves, else 1 (the
 * caller runs rsl). shard: a multiple of 64; out: [shard / 64][r][64]. mat: _rs16.skew_matrices,
 * [65535][4]. */
int ps_rs_encode(const uint8_t *data, int64_t n, int64_t stride, int64_t shard, int64_t r, const uint64_t *mat,
                 uint8_t *out)
{
    int64_t m;
    if (!rs_serves(n, r, &m) || shard < 64 || shard % 64)
        return 1;
#ifdef X86
    if (ps_gfni())
        return rs_encode(data, n, stride, shard, r, m, mat, 0, out, r * 64, 64);
#else
    (void)data, (void)stride, (void)mat, (void)out;
#endif
    return 1;
}

/* The lane code's parity (_code.encode): rows of `lanes` 32-bit words (n of them, data stride
 * in bytes) to r rows of parity words at out + j * ostride, the bytes rsl.encode gives for the
 * split layout of the same words (_code._to_split), without the split copies. 0, -1 without
 * memory, 1 where rs_encode does not serve. */
int ps_rs_encode_words(const uint32_t *data, int64_t n, int64_t stride, int64_t lanes, int64_t r,
                       const uint64_t *mat, uint32_t *out, int64_t ostride)
{
    int64_t m;
    if (!rs_serves(n, r, &m) || lanes < 1)
        return 1;
#ifdef X86
    if (ps_gfni())
        return rs_encode((const uint8_t *)data, n, stride, 4 * lanes, r, m, mat, 1, (uint8_t *)out, 64, ostride);
#else
    (void)data, (void)stride, (void)mat, (void)out, (void)ostride;
#endif
    return 1;
}

/* ------------------------------------------------------------------ the keyed offset's keystream
 * AES-256 in CTR mode as OpenSSL's (the `cryptography` package's) with a 128-bit big-endian counter
 * whose high 64 bits are zero: block i of out is AES_k(0^64 || BE64(ctr + i)). VAES encrypts 4 blocks
 * an instruction, where OpenSSL's AES-NI CTR takes one: the seal's offset covers every word of the
 * model (a GiB of keystream for a GiB of fp32). The caller keeps ctr + nblocks below 2^64. */
#ifdef X86
#define VAES __attribute__((target("avx512f,avx512bw,vaes,aes")))
static int have_vaes(void)
{
    __builtin_cpu_init();
    return have_avx512bw() && __builtin_cpu_supports("vaes") && __builtin_cpu_supports("aes");
}

/* One step of the AES-256 key schedule: a ^= its shifted copies ^ the broadcast word t (FIPS-197 5.2). */
VAES static inline __m128i expand_step(__m128i a, __m128i t)
{
    a = _mm_xor_si128(a, _mm_slli_si128(a, 4));
    a = _mm_xor_si128(a, _mm_slli_si128(a, 4));
    a = _mm_xor_si128(a, _mm_slli_si128(a, 4));
    return _mm_xor_si128(a, t);
}

/* The 15 round keys of AES-256 (aeskeygenassist: RotWord, SubWord and Rcon in one). */
VAES static void aes256_schedule(const uint8_t *key, __m128i *rk)
{
    __m128i a = _mm_loadu_si128((const void *)key), b = _mm_loadu_si128((const void *)(key + 16));
    rk[0] = a, rk[1] = b;
#define EVEN(r, rcon) a = expand_step(a, _mm_shuffle_epi32(_mm_aeskeygenassist_si128(b, rcon), 0xFF)), rk[r] = a
#define ODD(r) b = expand_step(b, _mm_shuffle_epi32(_mm_aeskeygenassist_si128(a, 0), 0xAA)), rk[r] = b
    EVEN(2, 0x01);
    ODD(3);
    EVEN(4, 0x02);
    ODD(5);
    EVEN(6, 0x04);
    ODD(7);
    EVEN(8, 0x08);
    ODD(9);
    EVEN(10, 0x10);
    ODD(11);
    EVEN(12, 0x20);
    ODD(13);
    EVEN(14, 0x40);
#undef EVEN
#undef ODD
}

/* 4 counter blocks (c: their counters, little-endian in each lane's high quadword) encrypted. */
VAES static inline __m512i aes4(__m512i c, const __m512i *rk)
{
    static const uint8_t be[64] = {0, 1, 2, 3, 4, 5, 6, 7, 15, 14, 13, 12, 11, 10, 9, 8,
                                   0, 1, 2, 3, 4, 5, 6, 7, 15, 14, 13, 12, 11, 10, 9, 8,
                                   0, 1, 2, 3, 4, 5, 6, 7, 15, 14, 13, 12, 11, 10, 9, 8,
                                   0, 1, 2, 3, 4, 5, 6, 7, 15, 14, 13, 12, 11, 10, 9, 8};
    __m512i x = _mm512_xor_si512(_mm512_shuffle_epi8(c, _mm512_loadu_si512((const void *)be)), rk[0]);
#pragma GCC unroll 13
    for (int r = 1; r < 14; r++)
        x = _mm512_aesenc_epi128(x, rk[r]);
    return _mm512_aesenclast_epi128(x, rk[14]);
}

/* AES-256-CTR keystream: counter blocks nonce (8 bytes, read little-endian) then ctr, ctr + 1, ...
 * (8 bytes big-endian), as OpenSSL's CTR with that 16-byte counter block while ctr does not wrap. */
/* Keystream blocks [ctr, ctr + nblocks) under the round keys rk (15 x 16 bytes, aes256_schedule's). */
VAES static void aes_ctr_blocks(const uint8_t *rk128, uint64_t nonce, uint64_t ctr, int64_t nblocks, uint8_t *out)
{
    __m512i rk[15];
    for (int r = 0; r < 15; r++)
        rk[r] = _mm512_broadcast_i32x4(_mm_loadu_si128((const void *)(rk128 + 16 * r)));
    const __m512i four = _mm512_set_epi64(4, 0, 4, 0, 4, 0, 4, 0);
    const long long n = (long long)nonce;
    __m512i c = _mm512_set_epi64((long long)(ctr + 3), n, (long long)(ctr + 2), n, (long long)(ctr + 1), n, (long long)ctr, n);
    int64_t i = 0;
    for (; i + 16 <= nblocks; i += 16) { /* 4 independent chains hide vaesenc's latency */
        const __m512i c1 = _mm512_add_epi64(c, four), c2 = _mm512_add_epi64(c1, four), c3 = _mm512_add_epi64(c2, four);
        _mm512_storeu_si512((void *)(out + 16 * i), aes4(c, rk));
        _mm512_storeu_si512((void *)(out + 16 * i + 64), aes4(c1, rk));
        _mm512_storeu_si512((void *)(out + 16 * i + 128), aes4(c2, rk));
        _mm512_storeu_si512((void *)(out + 16 * i + 192), aes4(c3, rk));
        c = _mm512_add_epi64(c3, four);
    }
    for (; i < nblocks; i += 4) {
        const int left = nblocks - i < 4 ? (int)(nblocks - i) : 4;
        _mm512_mask_storeu_epi64(out + 16 * i, (__mmask8)((1u << (2 * left)) - 1), aes4(c, rk));
        c = _mm512_add_epi64(c, four);
    }
    for (int r = 0; r < 15; r++) /* no round key left on the stack */
        rk[r] = _mm512_setzero_si512();
    __asm__ volatile("" : : "m"(rk) : "memory"); /* the clearing is not optimised away */
}

/* aes256_schedule's round keys wiped from the stack (the clearing not optimised away). */
static void wipe_schedule(__m128i *k)
{
    for (int r = 0; r < 15; r++)
        k[r] = _mm_setzero_si128();
    __asm__ volatile("" : : "m"(*(__m128i(*)[15])k) : "memory");
}

VAES static void aes_ctr_vaes(const uint8_t *key, uint64_t nonce, uint64_t ctr, int64_t nblocks, uint8_t *out)
{
    __m128i k[15];
    aes256_schedule(key, k);
    aes_ctr_blocks((const uint8_t *)k, nonce, ctr, nblocks, out);
    wipe_schedule(k);
}

/* PAD_ROWS rows of the offset from row r on: keystream words [255 (g0 + r), ...), as _strata_map._pad_run's. */
VAES static void pad_refill(pad_src *ps, int64_t r)
{
    const uint64_t w0 = 255 * (uint64_t)(ps->g0 + r);
    aes_ctr_blocks(ps->rk, 0, w0 / 4, sizeof ps->ring / 16, (uint8_t *)ps->ring);
    ps->r0 = r, ps->o = (int)(w0 % 4);
}

static int pad_init(pad_src *ps, const uint32_t *pad, const uint8_t *key, int64_t g0)
{
    ps->pad = pad, ps->g0 = g0, ps->r0 = -1, ps->o = 0;
    if (pad != NULL || key == NULL)
        return pad == NULL ? -1 : 0;
    if (!have_vaes())
        return -1;
    __m128i k[15];
    aes256_schedule(key, k);
    memcpy(ps->rk, k, sizeof ps->rk);
    wipe_schedule(k);
    return 0;
}
#else
static void pad_refill(pad_src *ps, int64_t r)
{
    (void)ps, (void)r;
}

static int pad_init(pad_src *ps, const uint32_t *pad, const uint8_t *key, int64_t g0)
{
    (void)key;
    ps->pad = pad, ps->g0 = g0, ps->r0 = -1, ps->o = 0;
    return pad == NULL ? -1 : 0;
}
#endif

/* 1 where the kernels make the keyed offset from its key as they go (pad_src: VAES), else 0. */
int ps_vaes(void)
{
#ifdef X86
    return have_vaes();
#else
    return 0;
#endif
}

/* Returns 0, or 1 where this CPU lacks VAES (the caller uses OpenSSL). */
int ps_aes256_ctr(const uint8_t *key, uint64_t ctr, int64_t nblocks, uint8_t *out)
{
#ifdef X86
    if (have_vaes()) {
        aes_ctr_vaes(key, 0, ctr, nblocks, out);
        return 0;
    }
#endif
    (void)key, (void)ctr, (void)nblocks, (void)out;
    return 1;
}

/* The seal's block tags, written into blocks where they lie whole in a staging buffer (the
 * strata rows before ps_put_strata writes them), so that no pass reads the sealed file back to tag
 * it. Run r is runs[4 r ..]: the word offset in buf of its first block, its tensor's pad nonce (the
 * counter block's first 8 bytes, read little-endian), its first block b0 and its block count. Each
 * block (64 fp32 words, 128 16-bit words) gets the current MAC's tag, as _mac.BlockMac.tags with
 * the pads of BlockMac.pads: AES-256-CTR blocks 2 b and 2 b + 1 under pad_key give the words
 * (s, r, x, -) (little-endian), s mod p, r mod (p - 1) + 1, x mod p; the hash (ps_mlh, tag bits
 * wmask masked) and the tag bits (ps_write_tag). Returns 0, or 1 where the CPU lacks VAES (nothing
 * is written: the caller tags another way). */
#define TAG_BATCH 256
int ps_tag_runs(uint32_t *buf, const int64_t *runs, int64_t nruns, const uint8_t *pad_key, const uint64_t *keys,
                const uint64_t *keys2, const uint16_t *wmask, const uint64_t *wshift, int nm)
{
#ifdef X86
    if (!have_vaes())
        return 1;
    const uint64_t p = 4294967291ull;
    uint64_t ks[4 * TAG_BATCH] __attribute__((aligned(64))), pads[3 * TAG_BATCH], tags[TAG_BATCH];
    uint8_t internal[TAG_BATCH];
    memset(internal, 1, sizeof internal);
    for (int64_t q = 0; q < nruns; q++) {
        const int64_t *run = runs + 4 * q;
        for (int64_t b = 0; b < run[3]; b += TAG_BATCH) {
            const int64_t n = run[3] - b < TAG_BATCH ? run[3] - b : TAG_BATCH;
            uint16_t *words = (uint16_t *)(buf + run[0] + 64 * b);
            aes_ctr_vaes(pad_key, (uint64_t)run[1], 2 * (uint64_t)(run[2] + b), 2 * n, (uint8_t *)ks);
            for (int64_t i = 0; i < n; i++) {
                pads[3 * i] = ks[4 * i] % p;
                pads[3 * i + 1] = ks[4 * i + 1] % (p - 1) + 1;
                pads[3 * i + 2] = ks[4 * i + 2] % p;
            }
            ps_mlh(words, 0, n, 128, keys, keys2, wmask, nm, internal, pads, 3, tags, 1);
            ps_write_tag(words, 0, n, 128, wmask, wshift, nm, tags);
        }
    }
    volatile uint64_t *clear = ks; /* no keystream left on the stack */
    for (int i = 0; i < 4 * TAG_BATCH; i++)
        clear[i] = 0;
    return 0;
#else
    (void)buf, (void)runs, (void)nruns, (void)pad_key, (void)keys, (void)keys2, (void)wmask, (void)wshift, (void)nm;
    return 1;
#endif
}

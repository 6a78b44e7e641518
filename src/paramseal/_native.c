/* Optional compiled kernels of ParamSeal (loaded with ctypes by _native.py).
 *
 * The irs4 inner encoder with GFNI + AVX-512: the numba encoder in _irs.py is the reference and
 * the fallback, and the output of the two is compared bit for bit in tests/test_native.py.
 *
 * Per group (255 words = 1020 bytes), in four steps:
 *  1. each 64-byte chunk is mapped into GF(2^8) mod 0x11b (gf2p8mulb's field) by the field
 *     isomorphism phi (one affine op), then permuted so that lanes 16t..16t+15 hold codeword t;
 *  2. syndrome i of every codeword at once: XOR over chunks of gf2p8mulb(chunk, powers), then a
 *     fold of each 128-bit lane to its byte 0;
 *  3. the free bits: a GF(2) matrix (the parity solver composed with phi^-1) applied to the
 *     syndrome bits, by table lookup per syndrome nibble (Four Russians);
 *  4. the free bytes are ORed into their words (they are zero on entry).
 * All tables are built in Python (_native.py) from the same code description the numba
 * encoder uses.
 */
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define X86 1
#endif

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vbmi,gfni")))
#define GROUP_BYTES 1020
#define MAX_D 128
#define MAX_ROW 128

#ifndef PS_SRC_HASH
#define PS_SRC_HASH "" /* hatch_build.py passes the first 16 hex digits of this file's SHA-256 */
#endif

int ps_abi(void) { return 1; }

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

/* Steps 1 and 2 for one group G: R[64 i + 16 t] = syndrome i of codeword t (phi-domain, or mapped back
 * with phi_inv when back). Bytes are masked with keep (1024 bytes) or, with flags (255 bytes), the
 * bytes flagged fixed (flag bits 0-3) count as zero. */
TARGET static inline __attribute__((always_inline)) void group_syndromes(const uint8_t *G, const uint8_t *keep,
                                                                         const uint8_t *flags, const uint8_t *powers,
                                                                         int dmax, const uint8_t *perm, uint64_t phi,
                                                                         uint64_t phi_inv, int back, uint8_t *R)
{
    const __m512i idx = _mm512_loadu_si512((const void *)perm);
    const __m512i A = _mm512_set1_epi64((long long)phi), Ai = _mm512_set1_epi64((long long)phi_inv);
    const __mmask64 tail = (((__mmask64)1) << (GROUP_BYTES - 960)) - 1;
    static const uint8_t spread_ix[64] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5,
                                          5, 5, 6, 6, 6, 6, 7, 7, 7, 7, 8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10,
                                          11, 11, 11, 11, 12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15};
    static const uint8_t bit_ix[64] = {1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2,
                                       4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8,
                                       1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8};
    __m512i X[16];
#pragma GCC unroll 16
    for (int c = 0; c < 16; c++) {
        __m512i x = c < 15 ? _mm512_loadu_si512((const void *)(G + 64 * c)) : _mm512_maskz_loadu_epi8(tail, G + 960);
        if (keep)
            x = _mm512_and_si512(x, _mm512_loadu_si512((const void *)(keep + 64 * c)));
        if (flags) {
            __m512i f = _mm512_maskz_loadu_epi8(c < 15 ? 0xFFFF : 0x7FFF, flags + 16 * c);
            __mmask64 fixed = _mm512_test_epi8_mask(_mm512_permutexvar_epi8(_mm512_loadu_si512(spread_ix), f),
                                                    _mm512_loadu_si512(bit_ix));
            x = _mm512_maskz_mov_epi8(~fixed, x);
        }
        X[c] = _mm512_permutexvar_epi8(idx, _mm512_gf2p8affine_epi64_epi8(x, A, 0));
    }
    for (int i = 0; i < dmax; i++) {
        const uint8_t *p = powers + (size_t)i * 16 * 64;
        __m512i a = _mm512_setzero_si512();
#pragma GCC unroll 16
        for (int c = 0; c < 16; c++)
            a = _mm512_xor_si512(a, _mm512_gf2p8mul_epi8(X[c], _mm512_loadu_si512((const void *)(p + 64 * c))));
        a = _mm512_xor_si512(a, _mm512_bsrli_epi128(a, 8)); /* fold each 128-bit lane (one codeword) to byte 0 */
        a = _mm512_xor_si512(a, _mm512_bsrli_epi128(a, 4));
        a = _mm512_xor_si512(a, _mm512_bsrli_epi128(a, 2));
        a = _mm512_xor_si512(a, _mm512_bsrli_epi128(a, 1));
        _mm512_store_si512((void *)(R + 64 * i), back ? _mm512_gf2p8affine_epi64_epi8(a, Ai, 0) : a);
    }
}

/* W: ng groups of 1020 bytes, updated in place (free bits zero on entry).
 * powers: [dmax][16][64] syndrome powers, phi-domain, permuted lanes (0 where i >= d_t).
 * perm: 64 lane indices (vpermb) that group each chunk's bytes by codeword.
 * keep: 1024 bytes, the bits of a group the code reads (free bits 0: ignored, as the numba encoder does).
 * phi: the affine matrix of phi.
 * tabs: [4][2 dmax][16][rowbytes] rows of free-byte images per syndrome nibble value.
 * d: [4] syndromes per codeword; nfree: [4] free bytes per codeword (<= rowbytes);
 * place: [4][rowbytes] byte offset in the group of each free byte. */
TARGET int ps_irs_encode(uint8_t *W, int64_t ng, const uint8_t *powers, int dmax, const uint8_t *perm,
                         const uint8_t *keep, uint64_t phi, const uint8_t *tabs, const int32_t *d, const int32_t *nfree, int rowbytes,
                         const int32_t *place)
{
    if (dmax < 1 || dmax > MAX_D || (rowbytes != 64 && rowbytes != 128))
        return -1;
    uint8_t R[MAX_D * 64] __attribute__((aligned(64)));
    uint8_t out[MAX_ROW] __attribute__((aligned(64)));
    for (int64_t g = 0; g < ng; g++) {
        uint8_t *G = W + g * GROUP_BYTES;
        group_syndromes(G, keep, NULL, powers, dmax, perm, phi, 0, 0, R);
        for (int t = 0; t < 4; t++) {
            const uint8_t *tab = tabs + (size_t)t * 2 * dmax * 16 * rowbytes;
            __m512i o0 = _mm512_setzero_si512(), o1 = _mm512_setzero_si512();
            for (int i = 0; i < d[t]; i++) {
                unsigned s = R[64 * i + 16 * t];
                const uint8_t *lo = tab + ((size_t)(2 * i) * 16 + (s & 15)) * rowbytes;
                const uint8_t *hi = tab + ((size_t)(2 * i + 1) * 16 + (s >> 4)) * rowbytes;
                o0 = _mm512_xor_si512(o0, _mm512_xor_si512(_mm512_loadu_si512((const void *)lo),
                                                           _mm512_loadu_si512((const void *)hi)));
                if (rowbytes == 128)
                    o1 = _mm512_xor_si512(o1, _mm512_xor_si512(_mm512_loadu_si512((const void *)(lo + 64)),
                                                               _mm512_loadu_si512((const void *)(hi + 64))));
            }
            _mm512_store_si512((void *)out, o0);
            if (rowbytes == 128)
                _mm512_store_si512((void *)(out + 64), o1);
            const int32_t *pl = place + t * rowbytes;
            for (int e = 0; e < nfree[t]; e++)
                G[pl[e]] |= out[e];
        }
    }
    return 0;
}

/* The float words of a batch of consecutive groups, in position order: the gather of irs4 sealing.
 *
 * w: [ng][255] words (data positions are left as they are); row r is group g0 + r, and position
 * p holds stratum perm[(g0 + r) % nperm][p]. Stratum j < F comes in pieces of rows: piece q
 * covers rows up to row_end[q] (pieces pstart[j]..pstart[j+1]-1, in row order), and row r of it
 * is the word at address base[q] + 4 r; or, where fd[q] >= 0, at byte offset base[q] + 4 r of that
 * file, read with pread into row j of stage ([F][ng] words): a mapped model file is then
 * never faulted in, so it adds nothing to resident memory and needs no release. Each word is XORed with pad (same shape as w) and
 * masked with keep. Only rows [r0, r1) are done (one call per thread). Returns -3 when a
 * read fails, else -1, or with check_nan the index r * 255 + p of the first word whose
 * exponent is all ones (NaN or Inf), which the caller refuses. */
int64_t ps_gather(uint32_t *w, int64_t r0, int64_t r1, int64_t g0, const int16_t *perm, int nperm, int F, const int64_t *pstart,
                  const int64_t *row_end, const uint64_t *base, const int32_t *fd, uint32_t *stage, int64_t ng,
                  const uint32_t *pad, uint32_t keep, int check_nan)
{
    int64_t cur[256];
    const uint32_t *src[256];
    if (F < 1 || F > 255)
        return -2;
    for (int j = 0; j < F; j++) {
        cur[j] = pstart[j];
        for (int64_t q = pstart[j]; q < pstart[j + 1]; q++) { /* read file pieces into stage row j */
            int64_t a = q == pstart[j] ? 0 : row_end[q - 1], b = row_end[q];
            a = a > r0 ? a : r0;
            b = b < r1 ? b : r1;
            if (fd[q] < 0 || a >= b)
                continue;
            char *dst = (char *)(stage + j * ng + a);
            int64_t off = (int64_t)base[q] + 4 * a, left = 4 * (b - a);
            while (left > 0) {
                ssize_t got = pread(fd[q], dst, (size_t)left, (off_t)off);
                if (got < 0 && errno == EINTR)
                    continue;
                if (got <= 0)
                    return -3;
                dst += got, off += got, left -= got;
            }
        }
    }
    int64_t r = r0;
    while (r < r1) {
        int64_t lim = r1;
        for (int j = 0; j < F; j++) {
            while (row_end[cur[j]] <= r)
                cur[j]++;
            src[j] = fd[cur[j]] >= 0 ? stage + j * ng : (const uint32_t *)(uintptr_t)base[cur[j]];
            if (row_end[cur[j]] < lim)
                lim = row_end[cur[j]];
        }
        for (; r < lim; r++) {
            const int16_t *pr = perm + ((g0 + r) % nperm) * 255;
            uint32_t *out = w + r * 255;
            const uint32_t *pd = pad + r * 255;
            uint32_t nan = 0;
            for (int p = 0; p < 255; p++) {
                int j = pr[p];
                if (j >= F)
                    continue;
                uint32_t v = src[j][r];
                nan |= (uint32_t)((v & 0x7F800000u) == 0x7F800000u);
                out[p] = (v ^ pd[p]) & keep;
            }
            if (nan && check_nan)
                for (int p = 0; p < 255; p++)
                    if (pr[p] < F && (src[pr[p]][r] & 0x7F800000u) == 0x7F800000u)
                        return r * 255 + p;
        }
    }
    return -1;
}

/* The inverse placement, with the pad removed: out[j][r] = w[r][p] ^ pad[r][p] for the position p
 * of float stratum j < F in group g0 + r, for rows [r0, r1) (out: [F][ld], rows of ld words). */
void ps_to_strata(const uint32_t *w, const uint32_t *pad, int64_t r0, int64_t r1, int64_t g0, const int16_t *perm, int nperm, int F,
                  uint32_t *out, int64_t ld)
{
    for (int64_t r = r0; r < r1; r++) {
        const int16_t *pr = perm + ((g0 + r) % nperm) * 255;
        const uint32_t *in = w + r * 255, *pd = pad + r * 255;
        for (int p = 0; p < 255; p++) {
            int j = pr[p];
            if (j < F)
                out[j * ld + r] = in[p] ^ pd[p];
        }
    }
}

/* The outer code's content of rows [r0, r1) of w ([ng][255] words): each float word (position < F)
 * with its k free bits cleared and its k / 8 whole free bytes dropped, then the data words whole,
 * then zeros up to shard bytes (out: [ng][shard]). As _outer._content_nb. */
TARGET void ps_content(const uint32_t *w, int64_t r0, int64_t r1, int F, int k, uint8_t *out, int64_t shard)
{
    const uint32_t keep = ~((1u << k) - 1u);
    const int lo = k / 8, nb = 4 - lo;
    uint8_t ix[64] = {0};
    for (int m = 0; m < 16 * nb; m++)
        ix[m] = (uint8_t)(4 * (m / nb) + lo + m % nb);
    const __m512i idx = _mm512_loadu_si512((const void *)ix), km = _mm512_set1_epi32((int)keep);
    const __mmask64 part = nb == 4 ? ~(__mmask64)0 : (((__mmask64)1) << (16 * nb)) - 1;
    for (int64_t r = r0; r < r1; r++) {
        const uint32_t *row = w + r * 255;
        uint8_t *o = out + r * shard;
        int64_t at = 0;
        int j = 0;
        for (; j + 16 <= F; j += 16, at += 16 * nb) {
            __m512i v = _mm512_and_si512(_mm512_loadu_si512((const void *)(row + j)), km);
            _mm512_mask_storeu_epi8(o + at, part, _mm512_permutexvar_epi8(idx, v));
        }
        for (; j < F; j++) {
            uint32_t x = row[j] & keep;
            for (int b = lo; b < 4; b++)
                o[at++] = (uint8_t)(x >> (8 * b));
        }
        memcpy(o + at, row + j, 4 * (size_t)(255 - j));
        at += 4 * (255 - j);
        memset(o + at, 0, (size_t)(shard - at));
    }
}
#endif /* X86 */

/* The block MAC's hash (as _kernels.mlh_tags): for blocks [b0, b1) of words ([nb][nw] 16-bit),
 * out[b] = (sum_i keys[i] * m_i mod p + pads[b]) mod p, where m_i is word i with the tag bits
 * wmask[i] (i < nm) cleared in blocks flagged internal. keys < 2^32 and m_i < 2^16, so the sum
 * of up to 256 terms stays below 2^56 and one reduction is exact. Plain C (any CPU), with clones
 * the compiler vectorises for AVX2 and AVX-512, picked at load time. */
#if defined(X86) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default"), optimize("O3")))
#else
#define CLONES
#endif
CLONES void ps_mlh(const uint16_t *words, int64_t b0, int64_t b1, int nw, const uint64_t *keys, const uint16_t *wmask, int nm,
            const uint8_t *internal, const uint64_t *pads, uint64_t *out)
{
    const uint64_t p = 4294967291ull; /* 2^32 - 5 */
    for (int64_t b = b0; b < b1; b++) {
        const uint16_t *w = words + b * (int64_t)nw;
        uint64_t acc = 0;
        int i = 0;
        if (internal[b])
            for (; i < nm; i++)
                acc += keys[i] * (uint64_t)(uint16_t)(w[i] & ~wmask[i]);
        for (; i < nw; i++)
            acc += keys[i] * (uint64_t)w[i];
        out[b] = (acc % p + pads[b]) % p;
    }
}

/* Each block's stored tag (as _kernels.read_tag_words): OR of (word i & wmask[i]) << wshift[i], i < nm. */
CLONES void ps_read_tag(const uint16_t *words, int64_t b0, int64_t b1, int nw, const uint16_t *wmask, const uint64_t *wshift,
                 int nm, uint64_t *out)
{
    for (int64_t b = b0; b < b1; b++) {
        const uint16_t *w = words + b * (int64_t)nw;
        uint64_t t = 0;
        for (int i = 0; i < nm; i++)
            t |= (uint64_t)(w[i] & wmask[i]) << wshift[i];
        out[b] = t;
    }
}

#ifdef X86
/* Syndromes of groups [r0, r1) of W, as the decoder takes them (acc: [ng * 4][words] uint64,
 * row 4 g + t holds syndrome i of codeword t in byte i, zero past d_t). With flags
 * ([ng][255]), the bytes marked fixed (flag bits 0-3) count as zero, as in _irs._accumulate.
 * Same steps as ps_irs_encode's first two, then phi^-1 (phi_inv) back to GF(2^8) mod 0x11d. */
TARGET int ps_irs_syndromes(const uint8_t *W, const uint8_t *flags, int64_t r0, int64_t r1, const uint8_t *powers,
                            int dmax, const uint8_t *perm, uint64_t phi, uint64_t phi_inv, const int32_t *d, int words,
                            uint64_t *acc)
{
    if (dmax < 1 || dmax > MAX_D || 8 * words < dmax)
        return -1;
    uint8_t R[MAX_D * 64] __attribute__((aligned(64)));
    for (int64_t g = r0; g < r1; g++) {
        const uint8_t *G = W + g * GROUP_BYTES;
        group_syndromes(G, NULL, flags ? flags + g * 255 : NULL, powers, dmax, perm, phi, phi_inv, 1, R);
        uint8_t *o = (uint8_t *)(acc + g * 4 * (int64_t)words);
        memset(o, 0, (size_t)32 * words);
        for (int t = 0; t < 4; t++)
            for (int i = 0; i < d[t]; i++)
                o[8 * words * t + i] = R[64 * i + 16 * t];
    }
    return 0;
}
#endif

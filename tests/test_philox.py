"""Philox4x32-10 (kernels/philox.py and kernels/fast/philox.py): the published known answers, a
naive reference written from the paper with Python ints, the fast version word for word against
the plain one, exact float conversions, the integer keep mask equal to the float comparison, and
(on a GPU) the same numbers on CuPy as on NumPy."""
import numpy as np
import pytest

from minicct.kernels import dispatch, philox as ref
from minicct.kernels.fast import philox as fast

# Random123's tests/kat_vectors (github.com/DEShawResearch/random123), the "philox4x32 10" lines:
# counter (4 words), key (2 words) -> the 4 output words.
KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
    ((0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff), (0xffffffff, 0xffffffff),
     (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
    ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
     (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1)),
]


def naive_philox(ctr, key):
    """Philox4x32-10 from the SC'11 paper, one block, Python ints (its own constants)."""
    c, k = list(ctr), list(key)
    for r in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & 0xFFFFFFFF, (p0 >> 32) ^ c[3] ^ k[1], p0 & 0xFFFFFFFF]
        k = [(k[0] + 0x9E3779B9) & 0xFFFFFFFF, (k[1] + 0xBB67AE85) & 0xFFFFFFFF]
    return c


def naive_words(key, stream, base, count):
    """The stream's first ``count`` words from block ``base``, block by block."""
    out = []
    j = base
    while len(out) < count:
        out += naive_philox([j & 0xFFFFFFFF, (j >> 32) & 0xFFFFFFFF, stream & 0xFFFFFFFF, stream >> 32], key)
        j = (j + 1) % 2**64
    return out[:count]


@pytest.mark.parametrize("ctr,key,want", KAT)
def test_known_answers(ctr, key, want):
    assert naive_philox(ctr, key) == list(want)
    got = ref.philox4x32(np.array([ctr], np.uint32), key)
    assert got.dtype == np.uint32 and got[0].tolist() == list(want)


def test_known_answers_fast():
    for ctr, key, want in KAT:
        base, stream = ctr[0] | ctr[1] << 32, ctr[2] | ctr[3] << 32
        assert fast.words(np, key, stream, base, 4).tolist() == list(want)
        assert ref.words(np, key, stream, base, 4).tolist() == list(want)


def test_matches_the_naive_reference_on_random_inputs():
    rng = np.random.default_rng(0)
    ctr = rng.integers(0, 2**32, (64, 4), dtype=np.uint32)
    key = rng.integers(0, 2**32, 2, dtype=np.uint32)
    got = ref.philox4x32(ctr, key)
    for c, g in zip(ctr, got):
        assert g.tolist() == naive_philox(c.tolist(), key.tolist())


@pytest.mark.parametrize("count", [1, 3, 4, 5, 37, 4 * 24 + 2])
def test_words_count_the_blocks_and_wrap(count, monkeypatch):
    monkeypatch.setattr(fast, "CHUNK", 8)              # several chunks and a partial last one
    key, stream = (0x12345678, 0x9ABCDEF0), (7 << 32) | 3
    for base in (0, 2**32 - 3, 2**64 - 5):             # the low word carries; the counter wraps
        want = naive_words(key, stream, base, count)
        assert ref.words(np, key, stream, base, count).tolist() == want
        assert fast.words(np, key, stream, base, count).tolist() == want


def test_float_conversions_are_exact():
    w = np.array([0, 1, 255, 256, 0x7FFFFFFF, 0x80000000, 0xFFFFFF00, 0xFFFFFFFF, 0x12345678, 0x9ABCDEF1],
                 np.uint32)
    f32 = ref.to_float32(w)
    assert f32.dtype == np.float32
    assert f32.tolist() == [(int(x) >> 8) / 2**24 for x in w]
    assert f32.max() < 1.0
    f64 = ref.to_float64(w)
    assert f64.dtype == np.float64
    assert f64.tolist() == [((int(a) << 32 | int(b)) >> 11) / 2**53 for a, b in zip(w[::2], w[1::2])]
    assert ref.to_float64(np.array([0xFFFFFFFF] * 2, np.uint32))[0] == 1.0 - 2.0**-53


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniform_fast_equals_reference(dtype, monkeypatch):
    monkeypatch.setattr(fast, "CHUNK", 16)
    key, stream, base = (3, 4), 5, 2**32 - 7
    for shape in [(1,), (3, 5), (2, 9, 7)]:
        a = ref.uniform(np, key, stream, base, shape, dtype)
        b = fast.uniform(np, key, stream, base, shape, dtype)
        assert a.dtype == b.dtype == dtype and a.shape == b.shape == shape
        np.testing.assert_array_equal(a, b)
        n = int(np.prod(shape)) * (2 if dtype == np.float64 else 1)
        w = naive_words(key, stream, base, n)
        want = ([(x >> 8) / 2**24 for x in w] if dtype == np.float32
                else [((x << 32 | y) >> 11) / 2**53 for x, y in zip(w[::2], w[1::2])])
        assert a.reshape(-1).tolist() == want


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keep_mask_as_integers_equals_the_float_comparison(dtype, monkeypatch):
    monkeypatch.setattr(fast, "CHUNK", 64)
    key, stream, shape = (11, 12), 0, (40, 101)
    # p on and next to the numbers' grid (k / 2**24), a float32 rounding case, the ends
    ps = [0.0, 0.1, 0.25, 0.5, 0.9, 1.0, 3 / 2**24, 3 / 2**24 + 1e-12, 0.1 + 2**-30, 1 - 2**-25]
    u = ref.uniform(np, key, stream, 9, shape, dtype)
    ps += [float(u.flat[7]), float(u.flat[1000])]                      # p hits a number drawn: kept
    if dtype == np.float32:    # ...and one whose word's low 8 bits are 0 (a compare of words, w >= t << 8)
        w = ref.words(np, key, stream, 9, u.size)
        ps.append(float(u.flat[np.flatnonzero((w & 0xFF) == 0)[0]]))
    for p in ps:
        want = u >= p
        for impl in (ref, fast):
            got = impl.keep_mask(np, key, stream, 9, shape, p, dtype)
            assert got.dtype == bool and got.shape == shape
            np.testing.assert_array_equal(got, want, err_msg=f"{impl.__name__} p={p!r}")
    u = ref.uniform(np, key, stream, 0, (1 << 16,), dtype)
    assert abs((fast.keep_mask(np, key, stream, 0, u.shape, 0.3, dtype)).mean() - 0.7) < 0.01


def test_keep_threshold_is_the_first_number_kept():
    # (number >= p) flips exactly at the threshold: checked on the two numbers either side of it,
    # which random draws would almost never hit (a floor for the ceil would pass the tests above)
    # 0.5 + 1e-9 is 0.5 in float32: a float32 array compares with float32(p), not p
    for p in [0.1, 0.3, 0.5, 0.123456789, 3 / 2**24, 1e-9, 1 - 1e-9, 0.0, 0.5 + 1e-9, 0.25 + 1e-10]:
        for dtype, bits in ((np.float32, 24), (np.float64, 53)):
            t = ref.keep_threshold(p, dtype)
            below, at = (np.array([max(t - 1, 0), t], np.uint64).astype(dtype) * dtype(2.0 ** -bits))
            assert at >= p and (t == 0 or not below >= p), (p, dtype, t)


def test_counter_layout_block_number_low_words_stream_id_high_words():
    c = ref.counters(np, 3, 2**32 - 1, (5 << 32) | 6)
    assert c.tolist() == [[2**32 - 1, 0, 6, 5], [0, 1, 6, 5], [1, 1, 6, 5]]
    # a captured GPU graph passes its counter as a uint64 device scalar, and a draw's offset apart
    np.testing.assert_array_equal(ref.counters(np, 3, np.array(2**32 - 1, np.uint64), (5 << 32) | 6), c)
    np.testing.assert_array_equal(ref.counters(np, 3, np.array([2**32 - 4], np.uint64), (5 << 32) | 6, 3), c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_counter_as_an_array_plus_offset_draws_the_blocks_from_their_sum(dtype):
    """uniform / keep_mask with base an array and an offset (the captured graph's call) draw the
    blocks from base + offset on, in both NumPy versions, across the 2**64 wrap."""
    key, stream = (11, 12), 13
    for base, offset in ((0, 0), (5, 9), (2**64 - 2, 3)):
        want_u = ref.uniform(np, key, stream, (base + offset) % 2**64, (5, 7), dtype)
        want_k = ref.keep_mask(np, key, stream, (base + offset) % 2**64, (5, 7), 0.4, dtype)
        for impl in (ref, fast):
            array = np.array([base], np.uint64)
            np.testing.assert_array_equal(impl.uniform(np, key, stream, array, (5, 7), dtype, offset=offset), want_u)
            np.testing.assert_array_equal(impl.keep_mask(np, key, stream, array, (5, 7), 0.4, dtype, offset=offset),
                                          want_k)


def test_dispatch_picks_fast_on_numpy_in_fast_mode():
    class FakeCupy:
        __name__ = "cupy"
    with dispatch.use_mode("fast"):
        assert dispatch.philox(np).name == "philox_fast"
        assert dispatch.philox(FakeCupy).name == "philox_cuda"
    with dispatch.use_mode("reference"):
        assert dispatch.philox(np).name == dispatch.philox(FakeCupy).name == "philox"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_numbers_on_the_device_as_on_numpy(xp, dtype):
    """On a GPU (pytest --device gpu): CuPy makes the very numbers and masks NumPy makes, by the
    portable version and by the fused kernel (kernels/cuda/philox.py)."""
    if xp is np:
        pytest.skip("needs --device gpu: compares CuPy's Philox with NumPy's")
    from minicct.kernels.cuda import philox as cuda
    key, stream, base = (0xDEADBEEF, 0x01234567), (9 << 32) | 77, 2**32 - 2
    np.testing.assert_array_equal(xp.asnumpy(ref.words(xp, key, stream, base, 999)),
                                  naive_words(key, stream, base, 999))
    for shape in [(1,), (5,), (33, 65)]:
        want_u = fast.uniform(np, key, stream, base, shape, dtype)
        want_k = fast.keep_mask(np, key, stream, base, shape, 0.1, dtype)
        for impl in (ref, cuda):
            u = impl.uniform(xp, key, stream, base, shape, dtype)
            assert u.dtype == dtype and u.shape == shape
            np.testing.assert_array_equal(xp.asnumpy(u), want_u, err_msg=impl.__name__)
            np.testing.assert_array_equal(xp.asnumpy(impl.keep_mask(xp, key, stream, base, shape, 0.1, dtype)),
                                          want_k, err_msg=impl.__name__)
            # the counter as a device scalar plus an offset (what a captured graph passes)
            on_device = xp.asarray([base - 5], xp.uint64)
            np.testing.assert_array_equal(xp.asnumpy(impl.uniform(xp, key, stream, on_device, shape, dtype, offset=5)),
                                          want_u, err_msg=impl.__name__)
            np.testing.assert_array_equal(
                xp.asnumpy(impl.keep_mask(xp, key, stream, on_device, shape, 0.1, dtype, offset=5)),
                want_k, err_msg=impl.__name__)
    assert not cuda.keep_mask(xp, key, stream, 0, (99,), 1.0, dtype).any()


def test_masks_from_one_seed_are_the_same_on_both_devices(xp):
    """One seed, one mask: dropout, attention dropout and drop-path on CuPy as on NumPy."""
    if xp is np:
        pytest.skip("needs --device gpu: compares masks drawn on CuPy with masks drawn on NumPy")
    import minicct
    from minicct.kernels import dropout_forward, drop_path_forward, sdpa_forward
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((3, 2, 9, 4)).astype(np.float32) for _ in range(3))
    out = []
    for m in (np, xp):
        minicct.manual_seed(5)
        d = dropout_forward(m.ones((7, 11), np.float32), 0.3)[1]
        p = drop_path_forward(m.ones((16, 3), np.float32), 0.5)[1]
        a = sdpa_forward(*(m.asarray(t) for t in (q, k, v)), 0.2, True)[1].keep
        out.append([minicct.backend.to_numpy(t) for t in (d, p, a)])
    for x, y in zip(*out):
        np.testing.assert_array_equal(x, y)


_SHIM = """#include <stdbool.h>
#define __device__
#define __forceinline__ inline
#define __global__
struct dim3_ { unsigned int x; };
static struct dim3_ blockIdx, blockDim = {1}, threadIdx = {0};
"""
_DRIVER = """
extern "C" void run(int kind, u64 base, u64 offset, u32 k0, u32 k1, u64 stream, long long n, u64 t, void* out) {
    long long threads = kind < 2 ? (n + 3) / 4 : (n + 1) / 2;
    for (long long b = 0; b < threads; ++b) {       /* the grid, one GPU thread after the other */
        blockIdx.x = (unsigned)b;
        if (kind == 0) philox_f32(&base, offset, k0, k1, stream, n, (float*)out);
        if (kind == 1) philox_keep32(&base, offset, k0, k1, stream, n, (u32)t, (bool*)out);
        if (kind == 2) philox_f64(&base, offset, k0, k1, stream, n, (double*)out);
        if (kind == 3) philox_keep64(&base, offset, k0, k1, stream, n, t, (bool*)out);
    }
}
"""


def test_the_cuda_source_run_on_the_cpu_makes_the_same_numbers(tmp_path):
    """kernels/cuda/philox.py's CUDA C, compiled by the host's C++ compiler with the CUDA keywords
    defined away and its grid run as a loop: the kernels' arithmetic checked without a GPU."""
    import ctypes
    import shutil
    import subprocess
    from minicct.kernels.cuda import philox as cuda
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler here to run the CUDA source on the CPU")
    (tmp_path / "k.cpp").write_text(_SHIM + cuda.SOURCE + _DRIVER)
    subprocess.run([cxx, "-O1", "-shared", "-fPIC", "-o", str(tmp_path / "k.so"), str(tmp_path / "k.cpp")],
                   check=True)
    lib = ctypes.CDLL(str(tmp_path / "k.so"))
    lib.run.argtypes = [ctypes.c_int, ctypes.c_ulonglong, ctypes.c_ulonglong, ctypes.c_uint, ctypes.c_uint,
                        ctypes.c_ulonglong, ctypes.c_longlong, ctypes.c_ulonglong, ctypes.c_void_p]
    key, stream = (0xDEADBEEF, 0x01234567), (9 << 32) | 77
    for base in (0, 2**32 - 2, 2**64 - 3):
        for n in (1, 6, 1001):
            for kind, dtype in enumerate((np.float32, np.float32, np.float64, np.float64)):
                keep = kind in (1, 3)
                u = ref.uniform(np, key, stream, base, (n,), dtype)
                for p in (0.3, float(u[n // 2])):                  # the second: p is a number drawn
                    for offset in (0, 7):                          # a graph's draw: *base + offset
                        out = np.zeros(n, bool if keep else dtype)
                        lib.run(kind, (base - offset) % 2**64, offset, key[0], key[1], stream, n,
                                ref.keep_threshold(p, dtype), out.ctypes.data)
                        want = u >= p if keep else u
                        np.testing.assert_array_equal(out, want, err_msg=f"kind {kind}, base {base}, n {n}, p {p}")

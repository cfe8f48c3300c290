"""The hand-written GEMM (minicct/kernels/cuda/gemm.py) and the choice of product in graph mode;
and every CUDA source under minicct/kernels/cuda/ compiled by NVRTC, which needs no GPU.

    pytest tests/test_kernels_gemm.py                   # here: the dispatch rule, and the compile
                                                        # check when CuPy's NVRTC imports
    pytest tests/test_kernels_gemm.py --device gpu      # the GEMM against cupy.matmul as well
"""
import contextlib
import functools
import importlib
import inspect
import pkgutil
import re

import numpy as np
import pytest

from minicct import backend
from minicct.backend import to_numpy
from minicct.kernels import dispatch


# ---- the choice of product -------------------------------------------------------------------------
def test_graph_mode_products_on_numpy_are_plain_matmul(rng):
    a, b = rng.standard_normal((3, 5, 7)), rng.standard_normal((7, 4))
    with backend.graph_mode():
        assert backend.in_graph_mode()
        np.testing.assert_array_equal(dispatch.matmul(a, b), a @ b)
        np.testing.assert_array_equal(dispatch.row_dots(a, a), np.einsum("...ij,...ij->...i", a, a))
    assert not backend.in_graph_mode()


def test_gemm_chosen_only_in_graph_mode_on_a_gpu(monkeypatch, rng):
    """With arrays that look like CuPy's: the hand-written GEMM inside graph mode, cuBLAS (@) outside."""
    calls = []
    monkeypatch.setattr(dispatch, "on_gpu", lambda a: True)
    monkeypatch.setattr(dispatch._gemm_cuda, "matmul", lambda a, b: calls.append((a, b)) or "gemm")
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    assert isinstance(dispatch.matmul(a, b), np.ndarray) and not calls
    with backend.graph_mode():
        assert dispatch.matmul(a, b) == "gemm" and len(calls) == 1
    assert isinstance(dispatch.matmul(a, b), np.ndarray) and len(calls) == 1


def test_split_k_only_for_few_tiles_and_long_k():
    from minicct.kernels.cuda import gemm
    assert gemm.split_k(128, 128, 8192, 1) > 1            # a weight gradient: 4 tiles, K = N*L
    assert gemm.split_k(1, 128, 8192, 1) > 1              # a column sum as a product
    assert gemm.split_k(8192, 384, 128, 1) == 1           # a forward product: many tiles
    assert gemm.split_k(64, 64, 300, 1) == 1              # short K: not worth a second pass
    assert gemm.split_k(64, 64, 64, 256) == 1             # attention: a batch of tiles already
    pieces = gemm.split_k(5, 7, 3000, 1)
    assert pieces > 1 and 3000 // pieces >= gemm.SPLIT_MIN_K


class _KernelOnNumpy:
    """The gemm kernel's index arithmetic run in NumPy: C[b][m][n] = sum over k < K of
    A[b*sab + m*sam + k*sak] * B[b*sbb + k*sbk + n*sbn], b = b0 + blockIdx.z, counted from each
    array's first element (as the pointer the kernel gets), C contiguous. Checks the launch
    arguments the Python side computes (strides, batches, split-K, launches) without a GPU; what
    runs on the GPU is checked against cuBLAS by the tests below."""

    def __init__(self):
        self.launches = 0

    def get_function(self, name):
        assert name == "gemm"
        return self

    @staticmethod
    def _flat(a):
        root = a
        while isinstance(root.base, np.ndarray):
            root = root.base
        offset = (a.__array_interface__["data"][0] - root.__array_interface__["data"][0]) // a.itemsize
        return root.reshape(-1), offset

    def __call__(self, grid, block, args):
        A, B, C, M, N, K, sab, sam, sak, sbb, sbk, sbn, b0 = args
        assert block == (256,) and grid[0] * 64 >= N and grid[1] * 64 >= M
        self.launches += 1
        (fa, oa), (fb, ob) = self._flat(A), self._flat(B)
        m, n, k = np.arange(M)[:, None], np.arange(N)[None, :], np.arange(K)
        Cf = C.reshape(-1)
        for b in range(int(b0), int(b0) + grid[2]):
            a = fa[oa + b * sab + m * sam + k[None, :] * sak]                  # (M, K)
            bb = fb[ob + b * sbb + k[:, None] * sbk + n * sbn]                # (K, N)
            Cf[b * M * N:(b + 1) * M * N] = (a @ bb).reshape(-1)


@pytest.mark.parametrize("case", ["plain", "a@b.T", "a.T@b", "batched", "broadcast", "both broadcast",
                                  "1-D a", "1-D b", "odd batch layout", "split K", "K = 0", "grid chunks"])
def test_gemm_launch_arguments_on_numpy(case, monkeypatch, rng):
    from minicct.kernels.cuda import gemm
    kernel = _KernelOnNumpy()
    monkeypatch.setattr(backend, "import_cupy", lambda: np)
    monkeypatch.setattr(gemm, "module", lambda src, T: kernel)
    r = lambda *s: rng.standard_normal(s)                                      # noqa: E731
    a, b = {
        "plain": lambda: (r(70, 33), r(33, 65)),
        "a@b.T": lambda: (r(3, 20, 7), np.swapaxes(r(3, 9, 7), -1, -2)),
        "a.T@b": lambda: (np.swapaxes(r(3, 20, 70), -1, -2), r(3, 20, 9)),
        "batched": lambda: (r(2, 4, 5, 31), r(2, 4, 31, 6)),
        "broadcast": lambda: (r(4, 9, 20), r(20, 3)),
        "both broadcast": lambda: (r(2, 1, 7, 9), r(1, 3, 9, 4)),
        "1-D a": lambda: (r(17), r(17, 3)),
        "1-D b": lambda: (r(4, 17), r(17)),
        "odd batch layout": lambda: (r(4, 6, 5, 8).transpose(0, 2, 1, 3), r(8, 3)),
        "split K": lambda: (r(5, 3000), r(3000, 7)),
        "K = 0": lambda: (r(6, 0), r(0, 3)),
        "grid chunks": lambda: (r(5, 3, 4), r(4, 2)),
    }[case]()
    if case == "grid chunks":
        monkeypatch.setattr(gemm, "MAX_GRID_Z", 2)                             # 5 batches: 3 launches
    got = gemm.matmul(a, b)
    np.testing.assert_allclose(got, a @ b, rtol=1e-12, atol=1e-12)
    assert got.shape == (a @ b).shape
    if case == "split K":
        assert kernel.launches == 2                                            # the full pieces, the rest
    if case == "grid chunks":
        assert kernel.launches == 3


# ---- every CUDA source compiles (NVRTC: no GPU needed) ----------------------------------------------
def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc
    except Exception as e:       # no CuPy, or a CuPy without its NVRTC library
        pytest.skip(f"compile check needs CuPy's NVRTC (cupy_backends.cuda.libs.nvrtc), not importable "
                    f"here: {e}")
    return nvrtc


def _compile(nvrtc, src, name):
    try:
        prog = nvrtc.createProgram(src, f"{name}.cu", [], [])
        nvrtc.compileProgram(prog, ["-arch=compute_90", "--std=c++14"])
    except Exception as e:
        log = nvrtc.getProgramLog(prog) if "prog" in locals() else ""
        pytest.fail(f"{name} does not compile: {e}\n{log}")
    return nvrtc.getPTX(prog)


class _Recorder:
    """Stands in for the cupy module while a kernel module builds its kernels: records each
    ElementwiseKernel's (in_params, out_params, body, name) and each RawModule's code instead of
    compiling them."""
    def __init__(self):
        self.elementwise = []
        self.raw = []

    def ElementwiseKernel(self, in_params, out_params, body, name, **kw):
        self.elementwise.append((in_params, out_params, body, name))
        return None

    def RawModule(self, code, **kw):
        self.raw.append(code)
        return None


_C_TYPES = {"float64": "double", "float32": "float", "int64": "long long", "int32": "int", "bool": "bool",
            "T": "T"}


def _elementwise_as_cuda(in_params, out_params, body, name):
    """An ElementwiseKernel written out as the plain CUDA kernel CuPy would make of it: inputs as
    per-element values (scalars or arrays alike), ``raw`` ones as pointers, outputs as references."""
    args, lines = [], ["const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;"]
    for spec, out in [(p, False) for p in in_params.split(",")] + [(p, True) for p in out_params.split(",")]:
        words = spec.split()
        raw = words[0] == "raw"
        ctype, var = _C_TYPES[words[-2]], words[-1]
        if raw:
            args.append(f"const {ctype}* {var}")
        else:
            args.append(f"{'' if out else 'const '}{ctype}* {var}_")
            lines.append(f"{ctype}{'&' if out else ''} {var} = {var}_[i];")
    return ("typedef %(T)s T;\n" f'extern "C" __global__ void {name}({", ".join(args)}) {{\n'
            + "\n".join(lines) + "\n" + body + "\n}\n")


def _cuda_sources():
    """(name, source with %(T)s) for every kernel under minicct/kernels/cuda: the RawModule sources
    (module strings named *_SRC) and the ElementwiseKernels each module's cached builders make."""
    import minicct.kernels.cuda as pkg
    found = []
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for attr, value in vars(mod).items():
            if attr.endswith("_SRC") and isinstance(value, str):
                found.append((f"{info.name}.{attr}", value))
            elif (isinstance(value, functools._lru_cache_wrapper) and value.__module__ == mod.__name__
                  and not inspect.signature(value).parameters):       # a cached kernel builder
                found.append((f"{info.name}.{attr}", value))
    return found


def test_every_cuda_source_compiles(monkeypatch):
    nvrtc = _nvrtc()
    sources = _cuda_sources()
    names = [n for n, _ in sources]
    # The kernels the package has today must all be found (a renamed one would silently drop out).
    for expected in ("gemm._GEMM_SRC", "norm._LN_SRC", "pool._POOL_SRC", "gelu._kernels", "adamw._kernel",
                     "adamw._kernel_device_scalars", "philox._module"):
        assert expected in names, f"{expected} not found among {names}"
    compiled = 0
    for name, src in sources:
        if callable(src):                 # a builder of ElementwiseKernels: record what it makes
            rec = _Recorder()
            monkeypatch.setattr(backend, "import_cupy", lambda: rec)
            src.__wrapped__()
            monkeypatch.undo()
            kernels = [(f"{name}:{k[3]}", _elementwise_as_cuda(*k)) for k in rec.elementwise]
            kernels += [(f"{name}:raw{i}", code.replace("%", "%%")) for i, code in enumerate(rec.raw)]
            assert kernels, f"{name} built no kernel"
        else:
            kernels = [(name, src)]
        for kname, ksrc in kernels:
            for T in ("float", "double"):
                ptx = _compile(nvrtc, ksrc % {"T": T}, re.sub(r"\W", "_", kname))
                assert b".entry" in ptx if isinstance(ptx, bytes) else ".entry" in ptx
                compiled += 1
    assert compiled >= 2 * 9


def test_compile_check_catches_a_broken_source():
    """The check above can fail: a typo in a kernel is reported, not swallowed."""
    nvrtc = _nvrtc()
    from minicct.kernels.cuda import gemm
    broken = gemm._GEMM_SRC.replace("acc[i][j] += a[i] * bv[j];", "acc[i][j] += a[i] * bv[j]")
    with pytest.raises(pytest.fail.Exception, match="does not compile"):
        _compile(nvrtc, broken % {"T": "float"}, "broken")


# ---- the GEMM itself, on a GPU --------------------------------------------------------------------
@pytest.fixture
def cp(device):
    if device != "gpu":
        pytest.skip("the GEMM kernel only runs on a GPU: use `pytest --device gpu` on a CUDA machine")
    return backend.xp_for("gpu")


SHAPES = [((1, 1), (1, 1)), ((7, 13), (13, 5)), ((65, 17), (17, 129)), ((64, 64), (64, 64)),
          ((3, 70, 33), (3, 33, 9)), ((2, 4, 5, 31), (2, 4, 31, 66)),          # batched
          ((4, 9, 20), (20, 3)), ((20,), (20, 7)), ((6, 20), (20,)),           # broadcast, 1-D
          ((2, 1, 7, 9), (1, 3, 9, 4)), ((130, 0), (0, 5)),                    # both broadcast, K = 0
          ((70, 8195), (8195, 129)), ((8192,), (8192, 128)), ((5, 3000), (3000, 7))]   # split K


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sa,sb", SHAPES)
def test_gemm_matches_cupy_matmul(sa, sb, dtype, cp, rng):
    from minicct.kernels.cuda import gemm
    a = cp.asarray(rng.standard_normal(sa), dtype=dtype)
    b = cp.asarray(rng.standard_normal(sb), dtype=dtype)
    got, want = gemm.matmul(a, b), cp.matmul(a, b)
    assert got.shape == want.shape and got.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(to_numpy(got), to_numpy(want), rtol=tol, atol=tol * max(1, sa[-1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("form", ["a @ b", "a @ b.T", "a.T @ b", "a.T @ b.T"])
def test_gemm_transposed_views(form, dtype, cp, rng):
    """The products forward and backward need, as views (strides swapped, no copies)."""
    from minicct.kernels.cuda import gemm
    M, K, N = 67, 45, 33
    a = cp.asarray(rng.standard_normal((3, K, M) if "a.T" in form else (3, M, K)), dtype=dtype)
    b = cp.asarray(rng.standard_normal((3, N, K) if "b.T" in form else (3, K, N)), dtype=dtype)
    a2 = cp.swapaxes(a, -1, -2) if "a.T" in form else a
    b2 = cp.swapaxes(b, -1, -2) if "b.T" in form else b
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(to_numpy(gemm.matmul(a2, b2)), to_numpy(cp.matmul(a2, b2)), rtol=tol, atol=tol * K)


def test_gemm_odd_batch_layout_and_long_batch(cp, rng):
    """A batch no single stride walks (copied first), and more batches than one launch's grid."""
    from minicct.kernels.cuda import gemm
    x = cp.asarray(rng.standard_normal((4, 6, 5, 8)), dtype=np.float32).transpose(0, 2, 1, 3)
    w = cp.asarray(rng.standard_normal((8, 3)), dtype=np.float32)
    np.testing.assert_allclose(to_numpy(gemm.matmul(x, w)), to_numpy(x @ w), rtol=1e-5, atol=1e-5)
    a = cp.asarray(rng.standard_normal((gemm.MAX_GRID_Z + 3, 2, 3)), dtype=np.float32)
    b = cp.asarray(rng.standard_normal((3, 2)), dtype=np.float32)
    np.testing.assert_allclose(to_numpy(gemm.matmul(a, b)), to_numpy(a @ b), rtol=1e-5, atol=1e-5)


def test_model_step_in_graph_mode_matches_cublas(cp):
    """A CCT-2 training step's loss and gradients with every product by the GEMM (graph mode, eager)
    against the same step with cuBLAS."""
    import minicct
    from minicct import functional as F, models
    results = []
    for graph in (False, True):
        minicct.manual_seed(0)
        model = models.create_model("cct_2_3x2_32", num_classes=10, img_size=32).to("gpu")
        model.eval()                       # no masks: graph mode refuses them without Philox
        x = minicct.Tensor(cp.asarray(np.random.default_rng(0).standard_normal((6, 3, 32, 32)), dtype=np.float32))
        y = minicct.Tensor(cp.asarray(np.eye(10, dtype=np.float32)[[1, 2, 3, 4, 5, 6]]))
        with (backend.graph_mode() if graph else contextlib.nullcontext()):
            loss = F.cross_entropy(model(x), y)
            loss.backward()
        results.append((float(loss.item()), [to_numpy(p.grad.data) for p in model.parameters()]))
    (l0, g0), (l1, g1) = results
    assert l1 == pytest.approx(l0, rel=1e-5)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)

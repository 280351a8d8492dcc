"""hypothesis strategies for blockwise quantization inputs, importable by third-party test suites."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qref import BLOCKSIZES_4BIT
from qref.dtypes import BFloat16Array

finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True)


@st.composite
def float_arrays(draw, max_size=600, formats=("float32", "float16", "bfloat16")):
    """Finite arrays of any accepted format, with zeros, signed zeros and tails mixed in."""
    fmt = draw(st.sampled_from(formats))
    n = draw(st.integers(1, max_size))
    elements = st.one_of(finite32, st.sampled_from([0.0, -0.0, 1.0, -1.0]))
    x = draw(hnp.arrays(np.float32, n, elements=elements))
    if fmt == "float16":
        with np.errstate(over="ignore"):
            x16 = x.astype(np.float16)
        return np.where(np.isfinite(x16), x16, np.float16(0)).astype(np.float16)
    if fmt == "bfloat16":
        b = BFloat16Array.from_float32(x)
        return BFloat16Array(np.where(np.isfinite(b.to_float32()), b.bits, np.uint16(0)).astype(np.uint16))
    return x


blocksizes = st.sampled_from(BLOCKSIZES_4BIT)
small_blocksizes = st.sampled_from((32, 64, 128))
quant_types = st.sampled_from(("nf4", "fp4"))

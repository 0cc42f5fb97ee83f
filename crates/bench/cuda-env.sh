# Sourced by cuda-check.sh and gpu-check.sh: the environment a CUDA build of this project
# builds and runs in. The toolkit: $CUDA_HOME when set (a system install, e.g.
# /usr/local/cuda), else NVIDIA's wheels from PyPI (crates/bench/cuda-requirements.txt)
# installed under target/cuda. The driver's library, libcuda.so.1, comes with the GPU
# driver, never with a toolkit. Where the machine has none, the build links against a
# stand-in made here from the function list of cudarc's driver bindings, each function
# answering CUDA_ERROR_STUB_LIBRARY as NVIDIA's own lib/stubs/libcuda.so does, and
# PIANOLA_EXPECT_CPU_FALLBACK is set: there, every "auto" run must fall back to the CPU.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$PWD/target/cuda"
features="train/cuda,compose/cuda"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}" # sm_80 code runs on every card from Ampere on

if [ -z "${CUDA_HOME:-}" ]; then
    if [ ! -f "$root/toolkit/installed" ] || [ crates/bench/cuda-requirements.txt -nt "$root/toolkit/installed" ]; then
        echo "cuda-check: installing the CUDA toolkit wheels into $root/toolkit"
        rm -rf "$root/toolkit"
        python3 -m pip install --quiet --disable-pip-version-check --target "$root/toolkit" \
            -r crates/bench/cuda-requirements.txt
        touch "$root/toolkit/installed"
    fi
    CUDA_HOME="$(dirname "$(dirname "$(find "$root/toolkit/nvidia" -path '*/bin/nvcc' | head -n 1)")")"
    # The wheels ship versioned libraries only (libcublas.so.13); the linker asks for libcublas.so.
    for library in "$CUDA_HOME"/lib/lib*.so.*; do
        name="$(basename "$library")"
        ln -sf "$name" "$CUDA_HOME/lib/${name%%.so.*}.so"
    done
fi
export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH"
nvcc --version | tail -n 2

runtime_path="$CUDA_HOME/lib:$CUDA_HOME/lib64"
if ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
    # cudarc looks for libraries in lib/stubs under every root it is given (CUDA_PATH here).
    stubs="$root/driver/lib/stubs"
    cudarc="$(cargo metadata --format-version 1 --features "$features" |
        python3 -c 'import json, sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"))')"
    mkdir -p "$stubs"
    grep -oE 'pub unsafe fn cu[A-Za-z0-9_]+' "$(dirname "$cudarc")/src/driver/sys/mod.rs" | sort -u |
        awk '{ print "int " $4 "(void) { return 34; /* CUDA_ERROR_STUB_LIBRARY */ }" }' > "$stubs/libcuda.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/libcuda.c"
    ln -sf libcuda.so "$stubs/libcuda.so.1"
    echo "cuda-check: no libcuda.so.1 on this machine: linking and testing with a stand-in ($(wc -l < "$stubs/libcuda.c") functions)"
    export CUDA_PATH="$root/driver"
    runtime_path="$runtime_path:$stubs"
    # With no device to answer, every "auto" run must say so and use the CPU: the tests check.
    export PIANOLA_EXPECT_CPU_FALLBACK=1
fi
export LD_LIBRARY_PATH="$runtime_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# A target folder of its own, so the CPU build in target/release is left as it was; the
# Makefile and the tests' helpers follow CARGO_TARGET_DIR and CARGO_FLAGS as cargo does.
export CARGO_TARGET_DIR=target/cuda/build CARGO_FLAGS="--features $features"

// The static-library kernel, as flash-attn and mistralrs-quant carry theirs:
// build.rs compiles this with `nvcc -c -arch=sm_<cc>` into an object whose
// fatbin (SASS + PTX) sits in the `.nv_fatbin` section, archives it into a
// static library and links it, with the CUDA runtime (cudart_static), into
// the binary. The host launcher below is plain C ABI for Rust to call.
#include <cuda_runtime.h>
#include <stdio.h>

__global__ void add_two(int *v, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        v[i] += 2;
    }
}

// Write "<call>: <CUDA error>" into err and return the error's code.
static int fail(const char *call, cudaError_t e, char *err, size_t err_len)
{
    snprintf(err, err_len, "%s failed: %s (%s)", call, cudaGetErrorName(e), cudaGetErrorString(e));
    return (int)e;
}

// Add 2 to each of the n ints at host through the GPU. 0 on success, else
// a cudaError_t with a message in err.
extern "C" int mistralrs_quant_add_two(int *host, int n, char *err, size_t err_len)
{
    size_t bytes = (size_t)n * sizeof(int);
    int *dev = NULL;
    cudaError_t e = cudaMalloc((void **)&dev, bytes);
    if (e != cudaSuccess) {
        return fail("cudaMalloc", e, err, err_len);
    }
    const char *call = "cudaMemcpy (to device)";
    e = cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice);
    if (e == cudaSuccess) {
        add_two<<<(n + 255) / 256, 256>>>(dev, n);
        call = "add_two<<<>>>";
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) {
        call = "cudaDeviceSynchronize";
        e = cudaDeviceSynchronize();
    }
    if (e == cudaSuccess) {
        call = "cudaMemcpy (to host)";
        e = cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost);
    }
    cudaFree(dev);
    return e == cudaSuccess ? 0 : fail(call, e, err, err_len);
}

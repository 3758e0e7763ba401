// The PTX kernel, as candle-kernels carries its kernels: build.rs compiles
// this with `nvcc --ptx`, the binary embeds the text with include_str! and
// the driver JIT-compiles it at run time (cuModuleLoadData).
extern "C" __global__ void add_one(int *v, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        v[i] += 1;
    }
}

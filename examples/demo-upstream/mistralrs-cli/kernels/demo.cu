// The one kernel of the demo: enough to prove that the embedded device code
// loads and runs on the GPU it was built for.
extern "C" __global__ void add_one(int *v, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        v[i] += 1;
    }
}

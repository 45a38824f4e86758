/*
 * cuda_check: a small CUDA workload for the GPU check, with no CUDA toolkit at build time: it
 * loads libcuda.so.1 with dlopen, JIT-compiles a PTX kernel (x[i] += 1) and runs it 200 times
 * over 16M floats, then verifies the result. Prints JSON with the times (init, kernels, all).
 * usage: cuda_check
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext, *CUmodule, *CUfunction, *CUstream;
typedef unsigned long long CUdeviceptr;

static const char ptx[] = ".version 6.0\n"
                          ".target sm_50\n"
                          ".address_size 64\n"
                          ".visible .entry inc(.param .u64 p, .param .u32 n)\n"
                          "{\n"
                          "  .reg .pred %p1; .reg .b32 %r<6>; .reg .f32 %f<3>; .reg .b64 %rd<5>;\n"
                          "  ld.param.u64 %rd1, [p];\n"
                          "  ld.param.u32 %r2, [n];\n"
                          "  mov.u32 %r3, %ctaid.x; mov.u32 %r4, %ntid.x; mov.u32 %r5, %tid.x;\n"
                          "  mad.lo.s32 %r1, %r3, %r4, %r5;\n"
                          "  setp.ge.u32 %p1, %r1, %r2;\n"
                          "  @%p1 bra DONE;\n"
                          "  cvta.to.global.u64 %rd2, %rd1;\n"
                          "  mul.wide.u32 %rd3, %r1, 4;\n"
                          "  add.s64 %rd4, %rd2, %rd3;\n"
                          "  ld.global.f32 %f1, [%rd4];\n"
                          "  add.f32 %f2, %f1, 0f3F800000;\n"
                          "  st.global.f32 [%rd4], %f2;\n"
                          "DONE:\n"
                          "  ret;\n"
                          "}\n";

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

#define SYM(name, type)                                                                            \
	type name = (type)dlsym(h, #name);                                                         \
	if (!name) {                                                                               \
		printf("{\"error\":\"missing %s\"}\n", #name);                                     \
		return 1;                                                                          \
	}
#define CK(call)                                                                                   \
	do {                                                                                       \
		CUresult r_ = (call);                                                              \
		if (r_ != 0) {                                                                     \
			printf("{\"error\":\"%s = %d\"}\n", #call, r_);                            \
			return 1;                                                                  \
		}                                                                                  \
	} while (0)

int main(void)
{
	double t0 = now_ms();
	void *h = dlopen("libcuda.so.1", RTLD_NOW);
	if (!h) {
		printf("{\"error\":\"dlopen libcuda.so.1: %s\"}\n", dlerror());
		return 1;
	}
	typedef CUresult (*cuInit_fn)(unsigned);
	SYM(cuInit, cuInit_fn);
	typedef CUresult (*cuDeviceGet_fn)(CUdevice *, int);
	SYM(cuDeviceGet, cuDeviceGet_fn);
	typedef CUresult (*cuCtxCreate_v2_fn)(CUcontext *, unsigned, CUdevice);
	SYM(cuCtxCreate_v2, cuCtxCreate_v2_fn);
	typedef CUresult (*cuModuleLoadData_fn)(CUmodule *, const void *);
	SYM(cuModuleLoadData, cuModuleLoadData_fn);
	typedef CUresult (*cuModuleGetFunction_fn)(CUfunction *, CUmodule, const char *);
	SYM(cuModuleGetFunction, cuModuleGetFunction_fn);
	typedef CUresult (*cuMemAlloc_v2_fn)(CUdeviceptr *, size_t);
	SYM(cuMemAlloc_v2, cuMemAlloc_v2_fn);
	typedef CUresult (*cuMemcpyHtoD_v2_fn)(CUdeviceptr, const void *, size_t);
	SYM(cuMemcpyHtoD_v2, cuMemcpyHtoD_v2_fn);
	typedef CUresult (*cuMemcpyDtoH_v2_fn)(void *, CUdeviceptr, size_t);
	SYM(cuMemcpyDtoH_v2, cuMemcpyDtoH_v2_fn);
	typedef CUresult (*cuLaunchKernel_fn)(CUfunction, unsigned, unsigned, unsigned, unsigned,
	                                      unsigned, unsigned, unsigned, CUstream, void **,
	                                      void **);
	SYM(cuLaunchKernel, cuLaunchKernel_fn);
	typedef CUresult (*cuCtxSynchronize_fn)(void);
	SYM(cuCtxSynchronize, cuCtxSynchronize_fn);
	typedef CUresult (*cuMemFree_v2_fn)(CUdeviceptr);
	SYM(cuMemFree_v2, cuMemFree_v2_fn);
	typedef CUresult (*cuCtxDestroy_v2_fn)(CUcontext);
	SYM(cuCtxDestroy_v2, cuCtxDestroy_v2_fn);

	const unsigned n = 16u << 20, iters = 200;
	float *x = calloc(n, sizeof(float));
	CUdevice dev;
	CUcontext ctx;
	CUmodule mod;
	CUfunction fn;
	CUdeviceptr dp;
	if (!x)
		return 1;
	CK(cuInit(0));
	CK(cuDeviceGet(&dev, 0));
	CK(cuCtxCreate_v2(&ctx, 0, dev));
	CK(cuModuleLoadData(&mod, ptx));
	CK(cuModuleGetFunction(&fn, mod, "inc"));
	CK(cuMemAlloc_v2(&dp, (size_t)n * sizeof(float)));
	CK(cuMemcpyHtoD_v2(dp, x, (size_t)n * sizeof(float)));
	double t1 = now_ms();
	unsigned nn = n;
	void *args[] = { &dp, &nn };
	for (unsigned i = 0; i < iters; i++)
		CK(cuLaunchKernel(fn, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
	CK(cuCtxSynchronize());
	double t2 = now_ms();
	CK(cuMemcpyDtoH_v2(x, dp, (size_t)n * sizeof(float)));
	unsigned bad = 0;
	for (unsigned i = 0; i < n; i++)
		bad += x[i] != (float)iters;
	CK(cuMemFree_v2(dp));
	CK(cuCtxDestroy_v2(ctx));
	double t3 = now_ms();
	printf("{\"ok\":%s,\"init_ms\":%.1f,\"kernels_ms\":%.2f,\"total_ms\":%.1f,\"GBps\":%.1f}\n",
	       bad ? "false" : "true", t1 - t0, t2 - t1, t3 - t0,
	       2.0 * n * sizeof(float) * iters / ((t2 - t1) / 1e3) / 1e9);
	free(x);
	return bad ? 1 : 0;
}

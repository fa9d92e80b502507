#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <immintrin.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  size_t n=(size_t)atol(argv[1])/4; int pf=argc>2?atoi(argv[2]):0;
  float*a=aligned_alloc(64,n*4); for(size_t i=0;i<n;i++)a[i]=i*1e-9f;
  size_t fn=64<<20; float*f=aligned_alloc(64,fn); for(size_t i=0;i<fn/4;i++)f[i]=1;
  double best=1e9,med[21]; 
  for(int r=0;r<21;r++){
    __m512 s=_mm512_setzero_ps(); for(size_t i=0;i<fn/4;i+=16) s=_mm512_add_ps(s,_mm512_load_ps(f+i));
    volatile float sink=_mm512_reduce_add_ps(s);
    double t=now();
    __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0;
    for(size_t i=0;i<n;i+=64){ if(pf) _mm_prefetch((char*)(a+i+pf),_MM_HINT_T0);
      a0=_mm512_add_ps(a0,_mm512_load_ps(a+i));a1=_mm512_add_ps(a1,_mm512_load_ps(a+i+16));
      a2=_mm512_add_ps(a2,_mm512_load_ps(a+i+32));a3=_mm512_add_ps(a3,_mm512_load_ps(a+i+48));}
    sink=_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)));
    med[r]=now()-t;
  }
  for(int i=0;i<21;i++)for(int j=i+1;j<21;j++)if(med[j]<med[i]){double x=med[i];med[i]=med[j];med[j]=x;}
  printf("%zu bytes pf %d: %.2f GB/s (median)\n",n*4,pf,n*4/med[10]/1e9);
}

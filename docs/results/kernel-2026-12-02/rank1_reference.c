#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <time.h>
#include <immintrin.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define H 3
#define DH 16
#define W 38
static inline __m512 exp512(__m512 x){
  x=_mm512_max_ps(x,_mm512_set1_ps(-87.f));
  __m512 sh=_mm512_fmadd_ps(x,_mm512_set1_ps(1.44269504f),_mm512_set1_ps(12582912.f));
  __m512 n=_mm512_sub_ps(sh,_mm512_set1_ps(12582912.f));
  __m512 r=_mm512_fnmadd_ps(n,_mm512_set1_ps(0.6933594f),x); r=_mm512_fnmadd_ps(n,_mm512_set1_ps(-2.1219444e-4f),r);
  __m512 p=_mm512_set1_ps(1.9875691e-4f);
  p=_mm512_fmadd_ps(p,r,_mm512_set1_ps(1.3981999e-3f)); p=_mm512_fmadd_ps(p,r,_mm512_set1_ps(8.333452e-3f));
  p=_mm512_fmadd_ps(p,r,_mm512_set1_ps(4.1665796e-2f)); p=_mm512_fmadd_ps(p,r,_mm512_set1_ps(1.6666665e-1f));
  p=_mm512_fmadd_ps(p,r,_mm512_set1_ps(0.5f));
  __m512 y=_mm512_fmadd_ps(_mm512_mul_ps(p,r),r,_mm512_add_ps(r,_mm512_set1_ps(1.f)));
  __m512i e=_mm512_slli_epi32(_mm512_add_epi32(_mm512_sub_epi32(_mm512_castps_si512(sh),_mm512_castps_si512(_mm512_set1_ps(12582912.f))),_mm512_set1_epi32(127)),23);
  return _mm512_mul_ps(y,_mm512_castsi512_ps(e));
}
int main(int argc,char**argv){
  int n=atoi(argv[1]); int reps=atoi(argv[2]); int nb=n/64;
  float*d=aligned_alloc(64,(size_t)nb*W*64*4); for(long i=0;i<(long)nb*W*64;i++)d[i]=(float)((i*2654435761u)%1000)/1000.f-0.5f;
  float q[H*DH]; for(int i=0;i<H*DH;i++)q[i]=(i%7)*0.1f-0.3f;
  double best=1e9; double ts[5000];
  for(int rep=0;rep<reps;rep++){
    double t=now();
    float mx[H]={-1e30f,-1e30f,-1e30f}; __m512 z[H],zs[H]; __m512 acc[H*DH];
    for(int h=0;h<H;h++){z[h]=zs[h]=_mm512_setzero_ps();} for(int i=0;i<H*DH;i++)acc[i]=_mm512_setzero_ps();
    for(int b=0;b<nb;b++){ const float*blk=d+(long)b*W*64;
      __m512 s[H][4];
      for(int h=0;h<H;h++)for(int k=0;k<4;k++)s[h][k]=_mm512_setzero_ps();
      for(int i=0;i<DH;i++){ const float*x=blk+(H+i)*64;
        for(int k=0;k<4;k++){ __m512 xv=_mm512_load_ps(x+k*16);
          for(int h=0;h<H;h++) s[h][k]=_mm512_fmadd_ps(_mm512_set1_ps(q[h*DH+i]),xv,s[h][k]);}}
      for(int h=0;h<H;h++){ const float*a=blk+h*64; __m512 m=_mm512_set1_ps(-1e30f);
        for(int k=0;k<4;k++){ s[h][k]=_mm512_mul_ps(s[h][k],_mm512_load_ps(a+k*16)); m=_mm512_max_ps(m,s[h][k]);}
        float bm=_mm512_reduce_max_ps(m);
        if(bm>mx[h]){ float al=expf(mx[h]-bm); __m512 av=_mm512_set1_ps(al);
          zs[h]=_mm512_mul_ps(av,_mm512_fmadd_ps(_mm512_set1_ps(mx[h]-bm),z[h],zs[h])); z[h]=_mm512_mul_ps(z[h],av);
          for(int i=0;i<DH;i++)acc[h*DH+i]=_mm512_mul_ps(acc[h*DH+i],av); mx[h]=bm;}
        __m512 mv=_mm512_set1_ps(mx[h]); const float*av=blk+(H+DH+h)*64;
        for(int k=0;k<4;k++){ __m512 dd=_mm512_sub_ps(s[h][k],mv); __m512 e=exp512(dd);
          z[h]=_mm512_add_ps(z[h],e); zs[h]=_mm512_fmadd_ps(e,dd,zs[h]); s[h][k]=_mm512_mul_ps(e,_mm512_load_ps(av+k*16));}}
      for(int i=0;i<DH;i++){ const float*x=blk+(2*H+DH+i)*64;
        __m512 x0=_mm512_load_ps(x),x1=_mm512_load_ps(x+16),x2=_mm512_load_ps(x+32),x3=_mm512_load_ps(x+48);
        for(int h=0;h<H;h++){ __m512 a=acc[h*DH+i]; a=_mm512_fmadd_ps(s[h][0],x0,a);a=_mm512_fmadd_ps(s[h][1],x1,a);a=_mm512_fmadd_ps(s[h][2],x2,a);a=_mm512_fmadd_ps(s[h][3],x3,a); acc[h*DH+i]=a;}}
    }
    float o=0; for(int i=0;i<H*DH;i++)o+=_mm512_reduce_add_ps(acc[i]); for(int h=0;h<H;h++)o+=_mm512_reduce_add_ps(z[h]);
    double e=now()-t; ts[rep]=e; if(e<best)best=e; if(rep==0)printf("chk %f\n",o);
  }
  for(int i=0;i<reps;i++)for(int j=i+1;j<reps;j++)if(ts[j]<ts[i]){double x=ts[i];ts[i]=ts[j];ts[j]=x;} printf("median %.2f ns/token; ",ts[reps/2]/n*1e9);
  printf("n=%d: %.2f ns/token, %.1f GB/s\n",n,best/n*1e9,(double)n*W*4/best/1e9);
}

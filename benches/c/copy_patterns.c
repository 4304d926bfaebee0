/* Two pinned processes, one "broadcast" of N bytes per iteration, to tell
 * how the copy pattern and the state of the root's data change the time.
 * Build: gcc -O2 -mavx512f -mclwb -mclflushopt -o copy_patterns copy_patterns.c
 *        (x86-64 with AVX-512, CLWB and CLFLUSHOPT)
 * Run:   [DIRTY=1] ./copy_patterns BYTES MODE ITERATIONS [CHUNK]
 *   MODE 0  root memcpy's into a shared staging buffer, follower memcpy's out
 *   MODE 1  as 0 with non-temporal stores on the root
 *   MODE 2  follower process_vm_readv's the root's private buffer (single copy)
 *   MODE 3  as 0, pipelined in CHUNK-byte pieces with a progress counter
 *   MODE 4  as 0, follower copies with an AVX-512 loop
 *   MODE 5  as 4 on both sides
 *   MODE 6  as 2, the root first writes its lines back with clwb
 *   MODE 7  as 2, the root first flushes its lines with clflushopt
 *   MODE 8  as 0, follower copies four interleaved quarters (AVX-512)
 *   MODE 9  as 0, follower prefetches CHUNK bytes ahead (default 2048)
 *   MODE 10 root stages the first N-W bytes and process_vm_writev's the
 *           last W (env W, default N/2) into the follower's buffer while the
 *           follower copies the staged part
 *   DIRTY=1 the root rewrites its buffer before every iteration (fresh data).
 *   CONSUME=1 the follower reads one word per line of its buffer after
 *           every iteration, as an application using the data would.
 * Prints the mean time per iteration over the last 3/4 of the iterations.
 * Used for benches/README.md, "Why 64-256 KiB stay staged". */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sched.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <immintrin.h>
static volatile uint64_t sink;
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
typedef struct { volatile uint64_t done; char padd[56]; volatile uint64_t faddr; volatile int fpid; char padf[52]; volatile uint64_t seq; char pad[56]; volatile uint64_t ack; char pad2[56]; volatile uint64_t chunks; char pad3[56]; volatile uint64_t addr; volatile int pid;} ctl_t;
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);sched_setaffinity(0,sizeof s,&s);}
static void vcopy(char*d,const char*s,size_t n){ for(size_t i=0;i<n;i+=256){__m512i a=_mm512_loadu_si512((const void*)(s+i)),b=_mm512_loadu_si512((const void*)(s+i+64)),c=_mm512_loadu_si512((const void*)(s+i+128)),e=_mm512_loadu_si512((const void*)(s+i+192)); _mm512_storeu_si512((void*)(d+i),a);_mm512_storeu_si512((void*)(d+i+64),b);_mm512_storeu_si512((void*)(d+i+128),c);_mm512_storeu_si512((void*)(d+i+192),e);}}
static void q4copy(char*d,const char*s,size_t n){ size_t q=n/4; for(size_t i=0;i<q;i+=64){ __m512i a=_mm512_loadu_si512((const void*)(s+i)),b=_mm512_loadu_si512((const void*)(s+q+i)),c=_mm512_loadu_si512((const void*)(s+2*q+i)),e=_mm512_loadu_si512((const void*)(s+3*q+i)); _mm512_storeu_si512((void*)(d+i),a);_mm512_storeu_si512((void*)(d+q+i),b);_mm512_storeu_si512((void*)(d+2*q+i),c);_mm512_storeu_si512((void*)(d+3*q+i),e);} }
static void pfcopy(char*d,const char*s,size_t n,size_t ahead){ for(size_t i=0;i<n;i+=256){ for(int k=0;k<4;k++) if(i+ahead+64*k<n) _mm_prefetch(s+i+ahead+64*k,_MM_HINT_T0); __m512i a=_mm512_loadu_si512((const void*)(s+i)),b=_mm512_loadu_si512((const void*)(s+i+64)),c=_mm512_loadu_si512((const void*)(s+i+128)),e=_mm512_loadu_si512((const void*)(s+i+192)); _mm512_storeu_si512((void*)(d+i),a);_mm512_storeu_si512((void*)(d+i+64),b);_mm512_storeu_si512((void*)(d+i+128),c);_mm512_storeu_si512((void*)(d+i+192),e);} }
static void ntcopy(char*d,const char*s,size_t n){ for(size_t i=0;i<n;i+=64){__m512i v=_mm512_loadu_si512((const void*)(s+i)); _mm512_stream_si512((void*)(d+i),v);} _mm_sfence();}
int main(int argc,char**argv){
  size_t n=atol(argv[1]); int mode=atoi(argv[2]); int iters=atoi(argv[3]); size_t chunk=argc>4?atol(argv[4]):(atoi(argv[2])==9?2048:n);
  ctl_t*c=mmap(0,4096,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0);
  char*stg=mmap(0,n,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0); memset(stg,1,n);
  memset(c,0,4096);
  pid_t p=fork();
  char*buf=aligned_alloc(4096,n); memset(buf,p?2:3,n);
  size_t w = getenv("W")?atol(getenv("W")):n/2;
  if(p==0){ pin(1); c->faddr=(uint64_t)buf; c->fpid=getpid();
    for(uint64_t it=1;it<=iters;it++){
      if(mode==3){ size_t got=0; while(got<n){ while(c->chunks*chunk<=got && c->chunks*chunk<n) _mm_pause(); size_t upto=c->chunks*chunk; if(upto>n)upto=n; memcpy(buf+got,stg+got,upto-got); got=upto;} }
      else { while(c->seq<it) _mm_pause();
      if(mode==2||mode==6||mode==7){ struct iovec l={buf,n}, r={(void*)c->addr,n}; if(process_vm_readv(c->pid,&l,1,&r,1,0)!=(ssize_t)n){perror("pvr");exit(1);} }
      else if(mode==10){ memcpy(buf,stg,n-w); while(c->done<it) _mm_pause(); }
      else if(mode==4||mode==5) vcopy(buf,stg,n); else if(mode==8) q4copy(buf,stg,n); else if(mode==9) pfcopy(buf,stg,n,chunk); else memcpy(buf,stg,n);}
      if(getenv("CONSUME")){ uint64_t a=0; for(size_t i=0;i<n;i+=64) a+=*(volatile uint64_t*)(buf+i); sink=a; }
      c->ack=it;
    }
    exit(0);
  }
  pin(0); c->addr=(uint64_t)buf; c->pid=getpid();
  double t0=0;
  for(uint64_t it=1;it<=iters;it++){
    if(it==iters/4) t0=now();
    if(getenv("DIRTY")) memset(buf,(int)it,n);
    if(mode==0||mode==4||mode==8||mode==9) memcpy(stg,buf,n);
    else if(mode==5) vcopy(stg,buf,n);
    else if(mode==1) ntcopy(stg,buf,n);
    else if(mode==10){ memcpy(stg,buf,n-w); __atomic_store_n(&c->seq,it,__ATOMIC_RELEASE);
      while(c->fpid==0) _mm_pause();
      struct iovec l={buf+n-w,w}, r={(void*)(c->faddr+n-w),w}; if(w && process_vm_writev(c->fpid,&l,1,&r,1,0)!=(ssize_t)w){perror("pvw");exit(1);}
      __atomic_store_n(&c->done,it,__ATOMIC_RELEASE); }
    else if(mode==6){ for(size_t i=0;i<n;i+=64) _mm_clwb(buf+i); _mm_sfence(); }
    else if(mode==7){ for(size_t i=0;i<n;i+=64) _mm_clflushopt(buf+i); _mm_sfence(); }
    if(mode==3){ for(size_t o=0;o<n;o+=chunk){ size_t k=n-o<chunk?n-o:chunk; memcpy(stg+o,buf+o,k); __atomic_store_n(&c->chunks,(uint64_t)((o+k+chunk-1)/chunk)+ (it-1)*0,__ATOMIC_RELEASE);} }
    __atomic_store_n(&c->seq,it,__ATOMIC_RELEASE);
    while(c->ack<it) _mm_pause();
    if(mode==3) c->chunks=0;
  }
  double t=(now()-t0)/(iters-iters/4);
  printf("n=%zu mode=%d chunk=%zu: %.2f us  %.2f GB/s\n",n,mode,chunk,t*1e6,n/t/1e9);
  wait(0); return 0;
}

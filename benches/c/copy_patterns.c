/* Two pinned processes, one "broadcast" of N bytes per iteration, to tell
 * how the copy pattern and the state of the root's data change the time.
 * Build: gcc -O2 -mavx512f -o copy_patterns copy_patterns.c   (x86-64, AVX-512)
 * Run:   [DIRTY=1] ./copy_patterns BYTES MODE ITERATIONS [CHUNK]
 *   MODE 0  root memcpy's into a shared staging buffer, follower memcpy's out
 *   MODE 1  as 0 with non-temporal stores on the root
 *   MODE 2  follower process_vm_readv's the root's private buffer (single copy)
 *   MODE 3  as 0, pipelined in CHUNK-byte pieces with a progress counter
 *   MODE 4  as 0, follower copies with an AVX-512 loop
 *   MODE 5  as 4 on both sides
 *   DIRTY=1 the root rewrites its buffer before every iteration (fresh data).
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
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
typedef struct { volatile uint64_t seq; char pad[56]; volatile uint64_t ack; char pad2[56]; volatile uint64_t chunks; char pad3[56]; volatile uint64_t addr; volatile int pid;} ctl_t;
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);sched_setaffinity(0,sizeof s,&s);}
static void vcopy(char*d,const char*s,size_t n){ for(size_t i=0;i<n;i+=256){__m512i a=_mm512_loadu_si512((const void*)(s+i)),b=_mm512_loadu_si512((const void*)(s+i+64)),c=_mm512_loadu_si512((const void*)(s+i+128)),e=_mm512_loadu_si512((const void*)(s+i+192)); _mm512_storeu_si512((void*)(d+i),a);_mm512_storeu_si512((void*)(d+i+64),b);_mm512_storeu_si512((void*)(d+i+128),c);_mm512_storeu_si512((void*)(d+i+192),e);}}
static void ntcopy(char*d,const char*s,size_t n){ for(size_t i=0;i<n;i+=64){__m512i v=_mm512_loadu_si512((const void*)(s+i)); _mm512_stream_si512((void*)(d+i),v);} _mm_sfence();}
int main(int argc,char**argv){
  size_t n=atol(argv[1]); int mode=atoi(argv[2]); int iters=atoi(argv[3]); size_t chunk=argc>4?atol(argv[4]):n;
  ctl_t*c=mmap(0,4096,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0);
  char*stg=mmap(0,n,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0); memset(stg,1,n);
  memset(c,0,4096);
  pid_t p=fork();
  char*buf=aligned_alloc(4096,n); memset(buf,p?2:3,n);
  if(p==0){ pin(1);
    for(uint64_t it=1;it<=iters;it++){
      if(mode==3){ size_t got=0; while(got<n){ while(c->chunks*chunk<=got && c->chunks*chunk<n) _mm_pause(); size_t upto=c->chunks*chunk; if(upto>n)upto=n; memcpy(buf+got,stg+got,upto-got); got=upto;} }
      else { while(c->seq<it) _mm_pause();
      if(mode==2){ struct iovec l={buf,n}, r={(void*)c->addr,n}; if(process_vm_readv(c->pid,&l,1,&r,1,0)!=(ssize_t)n){perror("pvr");exit(1);} }
      else if(mode==4||mode==5) vcopy(buf,stg,n); else memcpy(buf,stg,n);}
      c->ack=it;
    }
    exit(0);
  }
  pin(0); c->addr=(uint64_t)buf; c->pid=getpid();
  double t0=0;
  for(uint64_t it=1;it<=iters;it++){
    if(it==iters/4) t0=now();
    if(getenv("DIRTY")) memset(buf,(int)it,n);
    if(mode==0||mode==4) memcpy(stg,buf,n);
    else if(mode==5) vcopy(stg,buf,n);
    else if(mode==1) ntcopy(stg,buf,n);
    if(mode==3){ for(size_t o=0;o<n;o+=chunk){ size_t k=n-o<chunk?n-o:chunk; memcpy(stg+o,buf+o,k); __atomic_store_n(&c->chunks,(uint64_t)((o+k+chunk-1)/chunk)+ (it-1)*0,__ATOMIC_RELEASE);} }
    __atomic_store_n(&c->seq,it,__ATOMIC_RELEASE);
    while(c->ack<it) _mm_pause();
    if(mode==3) c->chunks=0;
  }
  double t=(now()-t0)/(iters-iters/4);
  printf("n=%zu mode=%d chunk=%zu: %.2f us  %.2f GB/s\n",n,mode,chunk,t*1e6,n/t/1e9);
  wait(0); return 0;
}

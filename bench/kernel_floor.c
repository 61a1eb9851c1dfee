// What the kernel alone needs to start and stop N `sleep` processes on this machine: the floor
// under any process supervisor's start and stop, measured the way Kepler works, so the scale
// and cgroup benches can be read against it.
//
//   kernel_floor N group|CGROUP_DIR any|pid SLEEP
//
// Spawns N `SLEEP 100000` (SLEEP: the path of a sleep program) one after another, each leading its own process group, the spawner
// suspended until the child has exec'd (vfork semantics, as Kepler spawns). With a CGROUP_DIR
// (a directory in a cgroup v2 hierarchy), each child is cloned straight into a new cgroup of its
// own below it (clone3 CLONE_INTO_CGROUP), as Kepler's cgroup mode does. Then sends SIGTERM to
// every child and reaps them all: `any` waits for whichever child exited (what a reaper that
// learns of exits by waiting does; the kernel looks through the children for one that exited),
// `pid` waits for each child by pid in the order they were signalled (no such search; the lower
// bound). Prints "START_MS STOP_MS".
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

static const char *sleep_path;

// The child's side: its own process group, then exec.
static void become_sleep(void) __attribute__((noreturn));
static void become_sleep(void) {
  setpgid(0, 0);
  execl(sleep_path, sleep_path, "100000", (char *)NULL);
  _exit(127);
}

static pid_t spawn_in_group(void) {
  pid_t pid = vfork();
  if (pid == 0) become_sleep();
  return pid;
}

// clone3 with the child sharing the spawner's memory until it execs (CLONE_VM | CLONE_VFORK, as
// Kepler spawns): the child runs `become_sleep` on a stack of its own, so the call cannot return
// through the C library in the child. x86-64 only; elsewhere the child gets a copy of the memory.
static char child_stack[64 * 1024] __attribute__((aligned(16)));

static long clone3_shared_memory(struct clone_args *args) {
#if defined(__x86_64__)
  args->flags |= CLONE_VM;
  args->stack = (uint64_t)(uintptr_t)child_stack;
  args->stack_size = sizeof child_stack;
  long ret;
  __asm__ volatile(
      "syscall\n\t"
      "test %%rax, %%rax\n\t"
      "jnz 1f\n\t"
      "xor %%ebp, %%ebp\n\t"
      "call *%[child]\n\t"
      "hlt\n\t"
      "1:"
      : "=a"(ret)
      : "a"((long)SYS_clone3), "D"(args), "S"(sizeof *args), [child] "r"(become_sleep)
      : "rcx", "r11", "memory");
  return ret < 0 ? (errno = (int)-ret, -1) : ret;
#else
  long pid = syscall(SYS_clone3, args, sizeof *args);
  if (pid == 0) become_sleep();
  return pid;
#endif
}

static pid_t spawn_in_cgroup(const char *base, int index) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/s%d", base, index);
  if (mkdir(dir, 0755) != 0) die("mkdir cgroup");
  int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) die("open cgroup");
  struct clone_args args;
  memset(&args, 0, sizeof args);
  args.flags = CLONE_VFORK | CLONE_INTO_CGROUP;
  args.exit_signal = SIGCHLD;
  args.cgroup = (uint64_t)dirfd;
  long pid = clone3_shared_memory(&args);
  if (pid < 0) die("clone3");
  close(dirfd);
  return (pid_t)pid;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: kernel_floor N group|CGROUP_DIR any|pid SLEEP\n");
    return 2;
  }
  sleep_path = argv[4];
  int n = atoi(argv[1]);
  const char *cgroups = strcmp(argv[2], "group") == 0 ? NULL : argv[2];
  int by_pid = strcmp(argv[3], "pid") == 0;
  pid_t *pids = calloc((size_t)n, sizeof *pids);
  if (!pids) die("calloc");

  double t0 = now_ms();
  for (int i = 0; i < n; i++) {
    pids[i] = cgroups ? spawn_in_cgroup(cgroups, i) : spawn_in_group();
    if (pids[i] < 0) die("spawn");
  }
  double t1 = now_ms();

  double t2 = now_ms();
  for (int i = 0; i < n; i++) kill(pids[i], SIGTERM);
  for (int i = 0; i < n; i++) {
    int status;
    pid_t got = by_pid ? waitpid(pids[i], &status, 0) : wait(&status);
    if (got < 0) die("wait");
  }
  double t3 = now_ms();
  printf("%.1f %.1f\n", t1 - t0, t3 - t2);

  if (cgroups) {
    for (int i = 0; i < n; i++) {
      char dir[4096];
      snprintf(dir, sizeof dir, "%s/s%d", cgroups, i);
      rmdir(dir);
    }
  }
  return 0;
}

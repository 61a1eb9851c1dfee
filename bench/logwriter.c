/* Output generators for bench/logs.py, cheap enough not to be what is measured.
 *
 *   logwriter lines COUNT LEN DONE_FILE   COUNT lines of LEN bytes (newline included) in 64 KiB
 *                                          writes; then "<start_ns> <end_ns>" into DONE_FILE.
 *   logwriter ticks COUNT PERIOD_MS       COUNT lines each carrying CLOCK_REALTIME ns at the
 *                                          moment of its write(), one every PERIOD_MS.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int write_all(const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(1, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

static int lines(long count, long len, const char *done_file) {
  long long start = now_ns();
  enum { CHUNK = 64 * 1024 };
  static char buf[CHUNK];
  if (len < 2 || len > CHUNK) return 2;
  long per_chunk = CHUNK / len;
  for (long i = 0; i < per_chunk; i++) {
    memset(buf + i * len, 'x', (size_t)len - 1);
    buf[i * len + len - 1] = '\n';
  }
  for (long left = count; left > 0;) {
    long n = left < per_chunk ? left : per_chunk;
    if (write_all(buf, (size_t)(n * len)) < 0) return 1;
    left -= n;
  }
  long long end = now_ns();
  /* Written last, so its presence means every line has been handed to the pipe. */
  FILE *f = fopen(done_file, "w");
  if (!f) return 1;
  fprintf(f, "%lld %lld\n", start, end);
  return fclose(f) == 0 ? 0 : 1;
}

static int ticks(long count, long period_ms) {
  struct timespec period = {period_ms / 1000, (period_ms % 1000) * 1000000L};
  char line[32];
  for (long i = 0; i < count; i++) {
    int n = snprintf(line, sizeof line, "%lld\n", now_ns());
    if (write_all(line, (size_t)n) < 0) return 1;
    nanosleep(&period, NULL);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 5 && strcmp(argv[1], "lines") == 0)
    return lines(atol(argv[2]), atol(argv[3]), argv[4]);
  if (argc == 4 && strcmp(argv[1], "ticks") == 0) return ticks(atol(argv[2]), atol(argv[3]));
  fprintf(stderr, "usage: logwriter lines COUNT LEN DONE_FILE | logwriter ticks COUNT PERIOD_MS\n");
  return 2;
}

/* Test harness only: a hostile user's racer in a directory it can write.
 * Every new entry that appears in DIR (inotify IN_CREATE / IN_MOVED_TO) is
 * moved aside (kept, as "racer-moved-N") and replaced by a symbolic link to
 * TARGET, as fast as the kernel lets us: what root would follow if it acted
 * on a name in DIR after creating it. Runs until SECONDS pass; prints how many
 * entries it replaced.
 * usage: symlink-racer DIR TARGET SECONDS */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <time.h>
#include <sys/inotify.h>

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: symlink-racer DIR TARGET SECONDS\n"); return 64; }
  const char *dir = argv[1], *target = argv[2];
  time_t end = time(NULL) + atoi(argv[3]);
  int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (in < 0 || inotify_add_watch(in, dir, IN_CREATE | IN_MOVED_TO) < 0) { perror("inotify"); return 1; }
  char buf[65536] __attribute__((aligned(8)));
  char path[4096], aside[4096], tmp[4096];
  unsigned long n = 0, replaced = 0;
  printf("ready\n");
  fflush(stdout);
  while (time(NULL) < end) {
    struct pollfd p = { .fd = in, .events = POLLIN };
    if (poll(&p, 1, 100) <= 0) continue;
    ssize_t len = read(in, buf, sizeof buf);
    for (char *at = buf; len > 0 && at < buf + len;) {
      struct inotify_event *ev = (struct inotify_event *)at;
      at += sizeof *ev + ev->len;
      if (ev->len == 0 || strncmp(ev->name, "racer-", 6) == 0) continue;
      snprintf(path, sizeof path, "%s/%s", dir, ev->name);
      snprintf(aside, sizeof aside, "%s/racer-moved-%lu", dir, n);
      snprintf(tmp, sizeof tmp, "%s/racer-link-%lu", dir, n++);
      if (symlink(target, tmp) != 0) continue;
      if (rename(path, aside) == 0 && rename(tmp, path) == 0) replaced++;
      else unlink(tmp);
    }
  }
  printf("replaced %lu\n", replaced);
  return 0;
}

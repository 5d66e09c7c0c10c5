/*
 * What a hostile task tries first to leave its node (compiled by the tests and delivered as a resource file).
 * Each probe prints one line "<probe> <result>" where result is "ok ..." when the attempt worked, or the
 * errno name it failed with. The tests assert that none works.
 *
 *   escape handles           name_to_handle_at + open_by_handle_at of the root inode of every mounted
 *                            file system the node can see (the "shocker" breakout)
 *   escape module            finit_module / init_module
 *   escape mknod MAJ MIN     a block device node for the host's disk
 *   escape ptrace PID        attach to a process
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static const char *err(void) { return strerrorname_np(errno) ? strerrorname_np(errno) : "E?"; }

static void handles(void) {
    static const char *where[] = {"/", "/etc/hosts", "/etc/resolv.conf", "/mnt", "/datadisks/lun0", "/proc",
                                  "/dev/null", "/sys"};
    for (size_t i = 0; i < sizeof where / sizeof *where; i++) {
        struct { struct file_handle h; unsigned char bytes[128]; } fh;
        fh.h.handle_bytes = sizeof fh.bytes;
        int mount_id;
        if (name_to_handle_at(AT_FDCWD, where[i], &fh.h, &mount_id, 0) < 0)
            printf("name_to_handle_at %s %s\n", where[i], err());
        else
            printf("name_to_handle_at %s ok\n", where[i]);
        int mfd = open(where[i], O_RDONLY | O_CLOEXEC);
        if (mfd < 0) continue;
        /* The root directory of an ext4 file system is inode 2 (generation 0): the classic guess. */
        struct { struct file_handle h; unsigned int ino, gen; } guess = {{8, 1}, 2, 0};
        int fd = open_by_handle_at(mfd, &guess.h, O_RDONLY);
        if (fd >= 0) {
            printf("open_by_handle_at %s ok\n", where[i]);
            close(fd);
        } else {
            printf("open_by_handle_at %s %s\n", where[i], err());
        }
        close(mfd);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "handles")) handles();
    else if (!strcmp(argv[1], "module")) {
        int fd = open("/dev/null", O_RDONLY);
        printf("finit_module %s\n", syscall(SYS_finit_module, fd, "", 0) == 0 ? "ok" : err());
        printf("init_module %s\n", syscall(SYS_init_module, "", 0, "") == 0 ? "ok" : err());
    } else if (!strcmp(argv[1], "mknod") && argc == 4) {
        dev_t dev = makedev((unsigned)atoi(argv[2]), (unsigned)atoi(argv[3]));
        printf("mknod %s\n", mknod("/tmp/host-disk", S_IFBLK | 0600, dev) == 0 ? "ok" : err());
    } else if (!strcmp(argv[1], "ptrace") && argc == 3) {
        printf("ptrace %s\n", ptrace(PTRACE_ATTACH, atoi(argv[2]), 0, 0) == 0 ? "ok" : err());
    } else return 2;
    return 0;
}

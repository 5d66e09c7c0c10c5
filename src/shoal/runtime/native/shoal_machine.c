/*
 * shoal-machine: the small native helper behind Shoal's namespace machine runtime.
 *
 * Python 3.11 has no setns()/unshare(), and a fork of the Python interpreter costs several times more than a
 * fork of this static binary, so everything that must happen between fork() and exec() lives here:
 *
 *   shoal-machine init [--id ID] --root DIR --overlay / --lower L... [--lower-host MASK] --upper U --work W
 *                      [--volatile] [--overlay /datadisks/lun0 --lower L... --upper U --work W]...
 *                      [--bind SRC DEST | --robind SRC DEST | --tmpfs DEST OPTIONS]... [--hostname NAME] [--sysfs]
 *                      [--empty DIR]
 *                      [--userns BASE:COUNT] [--net VETH ADDRESS/PREFIX GATEWAY] [--cgroup DIR]...
 *       Builds a machine: new mount + uts + pid namespaces, the root overlay mounted on DIR, the other mounts
 *       (DEST is a path inside the machine), a minimal /dev, a fresh /proc, pivot_root into it. The first
 *       process of the new pid namespace then stays as the machine's init (pid 1: reaps orphans; SIGTERM or
 *       SIGPWR = power off: kill everything, exit). Prints the init's host pid on stdout once the machine is
 *       ready and exits; on failure prints the reason on stderr and exits 1 (nothing is left behind: the
 *       namespaces die with the half-built init).
 *       Hardening (a node that holds hostile code, see "the sandbox" below):
 *         --userns BASE:COUNT  a user namespace of its own: root inside is host uid BASE (ids 0..COUNT-1 map
 *                              to BASE..). Every lower layer is mounted id-mapped (files of host root show as
 *                              the machine's root); upper dirs hold the range's ids as they are. The mounts
 *                              are made outside, then the init enters the user namespace and unshares its
 *                              mount, uts, ipc and cgroup namespaces there, so the machine's root may mount,
 *                              set its hostname and so on in its own namespaces while every mount Shoal made
 *                              is locked (it cannot be unmounted to uncover what lies beneath). /proc and
 *                              /sys are masked as a container runtime masks them (masked directories show
 *                              --empty DIR, bound read-only). The capability bounding
 *                              set is cut to a container runtime's default set plus CAP_SYS_ADMIN and
 *                              CAP_NET_ADMIN (meaningful only in the machine's own namespaces).
 *         --lower-host MASK    the bottom layer is the host's root, masked by MASK (opaque directories), as
 *                              a read-only overlay of the id-mapped MASK and / made for this machine.
 *         --net VETH A/P GW    a network namespace of its own (owned by its user namespace), joined to the
 *                              host by a routed veth pair: VETH on the host (proxy ARP, strict reverse-path
 *                              filter: the machine cannot use another source address, a /32 route to A),
 *                              eth0 inside with A/P and a default route through GW.
 *         --netns              a network namespace of its own with only its loopback (no --net address)
 *         --cgroup DIR         join this cgroup (a directory of a v1 controller or of the v2 hierarchy),
 *                              then a cgroup namespace of its own.
 *       --control PATH         the init is also the machine's starter: it listens on the unix socket PATH
 *                              (a host file only the host's root may use) and forks the commands the host
 *                              sends from inside the machine (see "starter" below): no `join` per command.
 *
 *   shoal-machine join --init PID[:STARTTIME] [--cwd DIR [--make-cwd N]] [--user NAME|UID[:GID]] [--stdin PATH]
 *                      [--stdout PATH] [--stderr PATH] [--in-stdin PATH] [--in-stdout PATH] [--in-stderr PATH]
 *                      [--cgroup DIR]... [--timeout SECONDS] [--status-fd N] [--exit-file PATH] -- ARGV...
 *       Runs ARGV inside the machine whose init is PID: setns into its uts, pid and mount namespaces, fork a
 *       shim (a child subreaper, session leader) that forks the task. The task gets exactly this process's
 *       environment (the caller passes the clean task environment as ours), the working directory, the user,
 *       and the files given: --stdin/--stdout/--stderr are host paths (Shoal's own scratch files, opened before
 *       entering the machine), --in-* are paths inside the machine, opened there with the machine root's
 *       rights and without following a link (an --in-stdout/--in-stderr file is made anew); with --make-cwd N
 *       the working directory's missing directories are made there too, following no link, and its last N
 *       components are the user's (a task directory: the caller need not reach into the machine's disk for
 *       it); every other inherited file descriptor is closed. When the machine has a user namespace the
 *       command runs in it, with the machine's sandbox: the cut capability bounding set, the seccomp profile
 *       (seccomp_profile.h), no_new_privs for a user other than root; /proc and /dev are made sound first
 *       (whatever an earlier command mounted over them is detached). On timeout, SIGTERM, SIGINT or
 *       SIGHUP the whole process tree of the task is killed (the shim adopts orphans, so daemonised children
 *       cannot escape); the machine itself is untouched. When the task exits normally, background processes
 *       it left behind keep running under the machine's init, as on a real VM.
 *       With --status-fd the result is written there as one line:
 *           R <exit code> <signal or 0> <timed out 0|1> <stage> <errno> <message>
 *       where stage is "-" (the task ran), "user", "cwd" or "exec" (the task could not be started), "machine"
 *       (no such machine) or "helper" (bad arguments, an output file that cannot be opened...).
 *       The exit code of this process is the task's (128+signal when killed; 125 for helper errors and a bad
 *       user or cwd, 126/127 when the program could not be executed / found).
 *
 *   shoal-machine serve [TITLE-SPACE]
 *       A resident provisioner: builds machines on request, so that the caller pays a message instead of a
 *       process launch per machine. Requests arrive on stdin, one after another, each a 4-byte little-endian
 *       length and that many bytes: the arguments of `init`, each ending in a NUL byte. For each request the
 *       machine's init is forked from this process directly (no intermediate process, no exec) and builds
 *       the machine as `init` does; the reply on stdout is a status byte (0 = ready), a 4-byte little-endian
 *       length and the init's pid, or the reason it failed. Ends when stdin closes; the machines it built live
 *       on without it. A restarted server finds machines (and the strays of interrupted builds) by their
 *       init's command line, `shoal-machine init --id ID --root ROOT`: each init rewrites its own (forked)
 *       command line to read so, which needs room, hence TITLE-SPACE (an argument of blanks, say 8 KiB).
 *
 *   shoal-machine version
 *
 * Keep this file (and seccomp_profile.h beside it) dependency-free C11 + Linux: it is compiled on first use
 * with `cc -O2 -static`.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/seccomp.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "seccomp_profile.h"

#define HELPER_VERSION "3"

/* The new mount API (fsopen/fsconfig "lowerdir+", Linux >= 6.8) lifts the one-page limit of mount(2)'s
 * option string (about 40 layers with store paths) and needs no escaping of ',' and ':' in paths. The values
 * below are kernel ABI; defined here so the helper builds against old C libraries too. */
#define SH_FSOPEN_CLOEXEC 0x1u
#define SH_FSMOUNT_CLOEXEC 0x1u
#define SH_FSCONFIG_SET_FLAG 0
#define SH_FSCONFIG_SET_STRING 1
#define SH_FSCONFIG_CMD_CREATE 6
#define SH_MOVE_MOUNT_F_EMPTY_PATH 0x4u
#define MOUNT_OPTIONS_MAX 4000 /* leave room below the 4096-byte page */

/* Overlay features that would write things into an upper dir that the layer capture (plain OCI tar) cannot
 * represent (redirect xattrs for renamed directories, metadata-only copy-ups): always off, whatever the
 * kernel defaults are. */
#define OVERLAY_FIXED_OPTIONS "redirect_dir=off,metacopy=off,index=off"

static int g_errfd = 2;         /* where fatal messages go (stderr, or the readiness pipe during init setup) */
static int g_status_fd = -1;    /* join: the caller's status pipe; fatal errors are reported there too */
static const char *g_fail_stage = "helper"; /* join: "machine" while entering the machine */
static const char *g_prog = "shoal-machine";
static int g_shim_result_fd = -1; /* join's shim: where a fatal error is reported as the task's result */

/* What join's shim reports about the task. */
struct task_result {
    int have_status; /* the task was reaped: wstatus is valid */
    int wstatus;
    int err_stage;   /* 0, or one of STAGE_* when the program could not be started */
    int err_no;
    char message[256]; /* STAGE_HELPER: why */
};
static long g_owner = -1;       /* init with a user namespace: the host uid/gid of the machine's root */
/* --empty: an empty host directory that masked directories show (a bind mount of it, read-only), so that a mask
 * costs no file system of its own: every superblock a node adds grows what each memory cgroup of the host
 * holds for the kernel's shrinkers (one bit and counter per superblock in every memcg). */
static const char *g_empty_dir;
static int g_hardened;          /* init: the machine has a user namespace (its commands run sandboxed) */
static int g_exit_fd = -1;      /* the starter's command: its exit file, where a fatal error is reported too */
#define CONTROL_FD 3            /* the init's control socket, when it has one */

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "%s: ", g_prog);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    if (g_status_fd >= 0) dprintf(g_status_fd, "R 125 0 0 %s 0 %.*s", g_fail_stage, n, buf);
    if (g_exit_fd >= 0) dprintf(g_exit_fd, "R 125 0 0 %s 0 %.*s", g_fail_stage, n, buf);
    if (write(g_errfd, buf, (size_t)n) < 0) { /* nothing more we can do */ }
    if (g_shim_result_fd >= 0) { /* reaped, exit status 125, stage "helper" (4), and the message */
        struct task_result res = {1, 125 << 8, 4, 0, ""};
        snprintf(res.message, sizeof res.message, "%.*s", n - 1, buf);
        if (write(g_shim_result_fd, &res, sizeof res) < 0) { }
    }
    _exit(125);
}

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    if (!p) fail("out of memory");
    return p;
}

static char *joinpath(const char *root, const char *inside) {
    size_t a = strlen(root), b = strlen(inside);
    char *p = xcalloc(a + b + 2, 1);
    memcpy(p, root, a);
    if (inside[0] != '/') p[a++] = '/';
    memcpy(p + a, inside, b);
    return p;
}

static int mkdir_p(const char *path, mode_t mode) {
    char buf[PATH_MAX];
    if (strlen(path) >= sizeof buf) { errno = ENAMETOOLONG; return -1; }
    strcpy(buf, path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST) return -1;
    return 0;
}

/* A mount point must exist and be of the same kind (directory or file) as what is mounted on it. Python
 * creates them in the machine's skeleton layer; this only covers targets under other mounts (e.g. /mnt/x). */
static void ensure_mountpoint(const char *path, int want_dir) {
    struct stat st;
    if (stat(path, &st) == 0) return;
    if (want_dir) {
        if (mkdir_p(path, 0755) < 0) fail("mkdir %s: %s", path, strerror(errno));
        if (g_owner >= 0 && chown(path, (uid_t)g_owner, (gid_t)g_owner) < 0) fail("chown %s: %s", path, strerror(errno));
        return;
    }
    char *parent = strdup(path);
    if (!parent) fail("out of memory");
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = '\0';
        if (mkdir_p(parent, 0755) < 0) fail("mkdir %s: %s", parent, strerror(errno));
    }
    free(parent);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) fail("create %s: %s", path, strerror(errno));
    close(fd);
}

static void write_text(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) fail("open %s: %s", path, strerror(errno));
    ssize_t n = write(fd, text, strlen(text));
    if (n != (ssize_t)strlen(text)) fail("write %s: %s", path, n < 0 ? strerror(errno) : "short write");
    close(fd);
}

/* Join the cgroups given (host paths of cgroup directories): the calling process moves, its children follow.
 * We are single-threaded, so on a v1 hierarchy moving this thread ("0" into `tasks`) moves the process; it
 * spares the kernel's global thread-group lock, whose every taking by a writer of `cgroup.procs` waits for a
 * full RCU grace period (milliseconds, once per controller, on every machine boot and task start). */
static void join_cgroups(const char **dirs, int n) {
    for (int i = 0; i < n; i++) {
        char *tasks = joinpath(dirs[i], "tasks");
        if (access(tasks, W_OK) == 0) {
            write_text(tasks, "0\n");
        } else {
            char *procs = joinpath(dirs[i], "cgroup.procs");
            write_text(procs, "0\n");
            free(procs);
        }
        free(tasks);
    }
}

/* ------------------------------------------------------------------------------------------- the sandbox */

/* Capabilities a hardened machine keeps in its bounding set: a container runtime's default set, plus
 * CAP_SYS_ADMIN and CAP_NET_ADMIN, which count only in the machine's own user namespace (mount, unshare,
 * network setup inside the node). Everything else goes: CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_DAC_READ_SEARCH,
 * CAP_SYS_TIME, CAP_SYS_BOOT, CAP_MAC_*, ... */
static const int KEEP_CAPS[] = {
    0 /* CHOWN */, 1 /* DAC_OVERRIDE */, 3 /* FOWNER */, 4 /* FSETID */, 5 /* KILL */, 6 /* SETGID */,
    7 /* SETUID */, 8 /* SETPCAP */, 10 /* NET_BIND_SERVICE */, 12 /* NET_ADMIN */, 13 /* NET_RAW */,
    18 /* SYS_CHROOT */, 21 /* SYS_ADMIN */, 27 /* MKNOD */, 29 /* AUDIT_WRITE */, 31 /* SETFCAP */,
};

static void drop_bounding_set(void) {
    for (int cap = 0; cap < 64; cap++) {
        int keep = 0;
        for (size_t i = 0; i < sizeof KEEP_CAPS / sizeof *KEEP_CAPS; i++) keep |= KEEP_CAPS[i] == cap;
        if (!keep && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            fail("drop capability %d: %s", cap, strerror(errno));
    }
}

#if defined(__x86_64__)
#define SH_AUDIT_ARCH AUDIT_ARCH_X86_64
#define SH_X32_BIT 0x40000000u
#elif defined(__aarch64__)
#define SH_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

#ifdef SH_AUDIT_ARCH
#define N_DENIED (sizeof SECCOMP_DENIED / sizeof *SECCOMP_DENIED)
/* arch check (3) + nr load (1) + x32 check (2) + 2 per denied call + allow (1) */
static struct sock_filter g_filter[7 + 2 * N_DENIED];

static unsigned short build_filter(void) {
    struct sock_filter *f = g_filter;
    const unsigned deny = SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA);
    *f++ = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    *f++ = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SH_AUDIT_ARCH, 1, 0);
    *f++ = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA));
    *f++ = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#ifdef SH_X32_BIT
    *f++ = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, SH_X32_BIT, 0, 1);
    *f++ = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA));
#endif
    for (size_t i = 0; i < N_DENIED; i++) {
        *f++ = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)SECCOMP_DENIED[i].nr, 0, 1);
        *f++ = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, deny);
    }
    *f++ = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    return (unsigned short)(f - g_filter);
}

/* Install the profile on the calling thread (needs CAP_SYS_ADMIN in its user namespace or no_new_privs).
 * Only system calls: it runs in a vfork child. Returns 0 or an errno. */
static int install_seccomp(unsigned short len) {
    struct sock_fprog prog = {len, g_filter};
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0 ? errno : 0;
}
#else
static unsigned short build_filter(void) { return 0; }
static int install_seccomp(unsigned short len) { (void)len; return ENOSYS; }
#endif

/* A command must find a working /proc and /dev whatever an earlier one mounted over them. Shoal's own mounts
 * are locked (made outside the machine's user namespace), so detaching the top mount succeeds exactly as
 * long as something a command mounted covers them. */
static void sound_mounts(void) {
    static const char *points[] = {"/proc", "/dev", "/dev/null", "/dev/zero", "/dev/full", "/dev/random",
                                   "/dev/urandom", "/dev/tty"};
    for (size_t i = 0; i < sizeof points / sizeof *points; i++)
        for (int n = 0; n < 64 && umount2(points[i], MNT_DETACH) == 0; n++) { }
}

/* --------------------------------------------------------------------------- user and network namespaces */

/* A machine's new user and/or network namespace, held by file descriptors. A short-lived child unshares them
 * (a process cannot map its user namespace to host ids it does not hold); we write its id maps from outside,
 * keep references to its namespaces, and let it go. The network namespace is made after the user namespace,
 * in the same call, so the machine's user namespace owns it: its root holds CAP_NET_ADMIN there only. */
static void make_namespaces(long uid_base, long uid_count, int with_net, int *userns_fd, int *netns_fd,
                            int *ipc_uts_fds) {
    int flags = (uid_count > 0 ? CLONE_NEWUSER : 0) | (with_net ? CLONE_NEWNET : 0) |
                (ipc_uts_fds ? CLONE_NEWIPC | CLONE_NEWUTS : 0);
    *userns_fd = *netns_fd = -1;
    if (!flags) return;
    int up[2], down[2];
    if (pipe2(up, O_CLOEXEC) < 0 || pipe2(down, O_CLOEXEC) < 0) fail("pipe: %s", strerror(errno));
    pid_t child = fork();
    if (child < 0) fail("fork: %s", strerror(errno));
    if (child == 0) {
        close(up[0]);
        close(down[1]);
        /* Our pid as the host's /proc knows it (we may be in the machine's pid namespace already). */
        char self[32] = "";
        if (readlink("/proc/self", self, sizeof self - 1) < 0) _exit(1);
        int host_pid = atoi(self);
        int err = unshare(flags) < 0 ? errno : 0;
        if (write(up[1], &err, sizeof err) < 0 || write(up[1], &host_pid, sizeof host_pid) < 0) _exit(1);
        char b;
        while (read(down[0], &b, 1) < 0 && errno == EINTR) { } /* until our parent has what it needs */
        _exit(0);
    }
    close(up[1]);
    close(down[0]);
    int err = -1, host_pid = 0;
    if (read(up[0], &err, sizeof err) != (ssize_t)sizeof err || err != 0 ||
        read(up[0], &host_pid, sizeof host_pid) != (ssize_t)sizeof host_pid || host_pid <= 0)
        fail("unshare(%s%s): %s", uid_count > 0 ? "user " : "", with_net ? "net" : "",
             err > 0 ? strerror(err) : "the child died");
    char path[64], map[64];
    if (uid_count > 0) {
        snprintf(map, sizeof map, "0 %ld %ld\n", uid_base, uid_count);
        snprintf(path, sizeof path, "/proc/%d/uid_map", host_pid);
        write_text(path, map);
        snprintf(path, sizeof path, "/proc/%d/gid_map", host_pid);
        write_text(path, map);
        snprintf(path, sizeof path, "/proc/%d/ns/user", host_pid);
        if ((*userns_fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) fail("open %s: %s", path, strerror(errno));
    }
    if (with_net) {
        snprintf(path, sizeof path, "/proc/%d/ns/net", host_pid);
        if ((*netns_fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) fail("open %s: %s", path, strerror(errno));
    }
    for (int i = 0; ipc_uts_fds && i < 2; i++) {
        snprintf(path, sizeof path, "/proc/%d/ns/%s", host_pid, i ? "uts" : "ipc");
        if ((ipc_uts_fds[i] = open(path, O_RDONLY | O_CLOEXEC)) < 0) fail("open %s: %s", path, strerror(errno));
    }
    close(down[1]);
    close(up[0]);
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR) { }
}

/* In a machine's user namespace: refuse to go on unless it maps exactly the machine's range (ids 0..COUNT-1 to
 * the host's BASE..). A reserve shell's does (its range was allocated for it and given to this machine); any
 * other namespace that --shell might name once its keeper has gone does not, as no two live machines share a
 * range. */
static void check_id_maps(long base, long count) {
    static const char *const maps[] = {"/proc/self/uid_map", "/proc/self/gid_map"};
    for (int i = 0; i < 2; i++) {
        char buf[256] = "";
        int fd = open(maps[i], O_RDONLY | O_CLOEXEC);
        ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
        if (fd >= 0) close(fd);
        long inside = -1, outside = -1, length = -1;
        char extra = 0;
        if (n <= 0 || sscanf(buf, " %ld %ld %ld %c", &inside, &outside, &length, &extra) != 3 || inside != 0 ||
            outside != base || length != count)
            fail("--shell: the user namespace does not map the machine's ids (%s: %.*s)", maps[i],
                 n > 0 ? (int)n : 0, buf);
    }
}

/* Become the machine's root: enter its user namespace as uid 0 / gid 0 there (the host's BASE). */
static void enter_userns(int userns_fd, int shell, long base, long count) {
    if (setns(userns_fd, CLONE_NEWUSER) < 0) fail("setns user: %s", strerror(errno));
    if (shell) check_id_maps(base, count);
    if (setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
        fail("become the machine's root: %s", strerror(errno));
}

/* nsfs ioctls (linux/nsfs.h, not in every libc's headers). */
#define SHELL_NS 4 /* a reserve shell's namespaces: user, net, ipc, uts */
#define SH_NS_GET_USERNS _IO(0xb7, 0x1)
#define SH_NS_GET_PARENT _IO(0xb7, 0x2)
#define SH_NS_GET_NSTYPE _IO(0xb7, 0x3)

static int same_ns(int a, int b) {
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_ino == sb.st_ino && sa.st_dev == sb.st_dev;
}

/* A reserve shell's namespaces (see make_shell), opened by path: a user namespace and the network, IPC and
 * UTS namespaces it owns, as make_namespaces would have made them. Checked, so that a wrong path cannot put
 * the machine in some other namespace: the types, that the user namespace is a child of ours (never our
 * own), and that it owns the others. fds[]: user, net, ipc, uts. */
static const int SHELL_TYPES[SHELL_NS] = {CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS};

static void enter_shell(const char *const *paths, int *fds) {
    for (int i = 0; i < SHELL_NS; i++) {
        if ((fds[i] = open(paths[i], O_RDONLY | O_CLOEXEC)) < 0) fail("--shell %s: %s", paths[i], strerror(errno));
        if (ioctl(fds[i], SH_NS_GET_NSTYPE) != SHELL_TYPES[i])
            fail("--shell %s: not the namespace expected there (user, network, IPC, UTS)", paths[i]);
    }
    int ours = open("/proc/self/ns/user", O_RDONLY | O_CLOEXEC);
    int parent = ioctl(fds[0], SH_NS_GET_PARENT);
    if (ours < 0 || parent < 0 || !same_ns(parent, ours))
        fail("--shell %s: not a user namespace made by the host's own", paths[0]);
    close(ours);
    close(parent);
    for (int i = 1; i < SHELL_NS; i++) {
        int owner = ioctl(fds[i], SH_NS_GET_USERNS);
        if (owner < 0 || !same_ns(owner, fds[0]))
            fail("--shell %s: not a namespace of the user namespace %s", paths[i], paths[0]);
        close(owner);
    }
}

#define SH_OPEN_TREE_CLONE 1u
#define SH_AT_EMPTY_PATH 0x1000
#define SH_MOUNT_ATTR_IDMAP 0x00100000ull
#define SH_FSCONFIG_SET_FD 5
struct sh_mount_attr { uint64_t attr_set, attr_clr, propagation, userns_fd; };

/* Kernel objects whose release waits for an RCU grace period (a detached mount tree, the last reference to a
 * mount namespace) are released after the machine has said it is ready, not while its caller waits: each
 * release costs a grace period (about a millisecond here), several per machine. Their descriptors are kept
 * until the init closes everything past stderr (see init_machine). */
#define MAX_DEFERRED 80
static int g_deferred[MAX_DEFERRED];
static int g_ndeferred;

static void release_later(int fd) {
    if (g_ndeferred < MAX_DEFERRED) g_deferred[g_ndeferred++] = fd;
    else close(fd);
}

/* Detached mount trees that served only as an overlay's lower layers (the overlay holds clones of its own).
 * Closing each one's descriptor dissolves it, a grace period apiece; instead they are attached in the
 * namespace of Shoal's mounts, on the empty directory, just before the old root is detached, and go with the
 * old root in its single grace period (see park_detached). */
static int g_detached[MAX_DEFERRED];
static int g_ndetached;

static void dissolve_later(int fd) {
    if (g_empty_dir && g_ndetached < MAX_DEFERRED) g_detached[g_ndetached++] = fd;
    else release_later(fd);
}

/* Attach the trees kept by dissolve_later on the empty directory (after the masks have bound it: from here
 * on nothing binds it). One that cannot be attached is released the slow way. */
static void park_detached(void) {
    for (int i = 0; i < g_ndetached; i++) {
        if (syscall(SYS_move_mount, g_detached[i], "", AT_FDCWD, g_empty_dir, SH_MOVE_MOUNT_F_EMPTY_PATH) == 0)
            close(g_detached[i]); /* attached now: closing no longer dissolves it */
        else
            release_later(g_detached[i]);
    }
    g_ndetached = 0;
}

/* A detached, id-mapped clone of the mount at `path`: files of host uid/gid N show as the user namespace's N. */
static int idmapped_tree(const char *path, int userns_fd) {
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, path, SH_OPEN_TREE_CLONE | O_CLOEXEC);
    if (fd < 0) fail("open_tree %s: %s", path, strerror(errno));
    struct sh_mount_attr attr = {SH_MOUNT_ATTR_IDMAP, 0, 0, (uint64_t)userns_fd};
    if (syscall(SYS_mount_setattr, fd, "", SH_AT_EMPTY_PATH, &attr, sizeof attr) < 0)
        fail("id-mapped mount of %s: %s (its file system must support id-mapped mounts)", path, strerror(errno));
    return fd;
}

/* ---------------------------------------------------------------------------------------------- netlink */

struct nlreq {
    union {
        struct nlmsghdr h;
        char raw[1024];
    };
};

static struct rtattr *nl_put(struct nlreq *r, unsigned short type, const void *data, size_t len) {
    if (NLMSG_ALIGN(r->h.nlmsg_len) + RTA_SPACE(len) > sizeof r->raw) fail("netlink request too long");
    struct rtattr *rta = (struct rtattr *)(r->raw + NLMSG_ALIGN(r->h.nlmsg_len));
    rta->rta_type = type;
    rta->rta_len = (unsigned short)RTA_LENGTH(len);
    if (len) memcpy(r->raw + NLMSG_ALIGN(r->h.nlmsg_len) + RTA_LENGTH(0), data, len);
    r->h.nlmsg_len = NLMSG_ALIGN(r->h.nlmsg_len) + RTA_ALIGN(rta->rta_len);
    return rta;
}

static void nl_end(struct nlreq *r, struct rtattr *nest) {
    nest->rta_len = (unsigned short)(r->raw + r->h.nlmsg_len - (char *)nest);
}

static void *nl_start(struct nlreq *r, unsigned short type, unsigned short flags, const void *head, size_t len) {
    memset(r, 0, sizeof *r);
    r->h.nlmsg_len = (unsigned)NLMSG_LENGTH(len);
    r->h.nlmsg_type = type;
    r->h.nlmsg_flags = (unsigned short)(NLM_F_REQUEST | NLM_F_ACK | flags);
    memcpy(r->raw + NLMSG_LENGTH(0), head, len);
    return NLMSG_DATA(&r->h);
}

/* Send one request and read its acknowledgement: 0, or the errno the kernel answered. */
static int nl_talk(int fd, struct nlreq *r) {
    static unsigned seq;
    r->h.nlmsg_seq = ++seq;
    if (send(fd, &r->h, r->h.nlmsg_len, 0) < 0) return errno;
    char buf[4096];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n))
            if (h->nlmsg_seq == seq && h->nlmsg_type == NLMSG_ERROR)
                return -((struct nlmsgerr *)NLMSG_DATA(h))->error;
    }
}

static int nl_open(void) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) fail("netlink socket: %s", strerror(errno));
    return fd;
}

static void link_up(int fd, int index, const char *name) {
    struct nlreq r;
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC, .ifi_index = index, .ifi_flags = IFF_UP, .ifi_change = IFF_UP};
    nl_start(&r, RTM_NEWLINK, 0, &ifi, sizeof ifi);
    int err = nl_talk(fd, &r);
    if (err) fail("set %s up: %s", name, strerror(err));
}

static void add_route(int fd, struct in_addr dst, int dst_len, const struct in_addr *gateway, int oif,
                      int scope, int onlink) {
    struct nlreq r;
    struct rtmsg rt = {.rtm_family = AF_INET, .rtm_dst_len = (unsigned char)dst_len, .rtm_table = RT_TABLE_MAIN,
                       .rtm_protocol = RTPROT_BOOT, .rtm_scope = (unsigned char)scope, .rtm_type = RTN_UNICAST,
                       .rtm_flags = onlink ? RTNH_F_ONLINK : 0};
    nl_start(&r, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &rt, sizeof rt);
    if (dst_len) nl_put(&r, RTA_DST, &dst, sizeof dst);
    if (gateway) nl_put(&r, RTA_GATEWAY, gateway, sizeof *gateway);
    nl_put(&r, RTA_OIF, &oif, sizeof oif);
    int err = nl_talk(fd, &r);
    if (err) fail("add route: %s", strerror(err));
}

struct netspec {
    const char *veth;      /* the host's end */
    struct in_addr address, gateway;
    int prefix;
};

static void parse_net(const char *veth, const char *cidr, const char *gateway, struct netspec *n) {
    char addr[64];
    const char *slash = strchr(cidr, '/');
    if (strlen(veth) >= IFNAMSIZ || !veth[0]) fail("--net: bad interface name %s", veth);
    if (!slash || (size_t)(slash - cidr) >= sizeof addr) fail("--net: %s is not ADDRESS/PREFIX", cidr);
    memcpy(addr, cidr, (size_t)(slash - cidr));
    addr[slash - cidr] = '\0';
    n->veth = veth;
    n->prefix = atoi(slash + 1);
    if (inet_pton(AF_INET, addr, &n->address) != 1 || n->prefix < 1 || n->prefix > 32)
        fail("--net: %s is not ADDRESS/PREFIX", cidr);
    if (inet_pton(AF_INET, gateway, &n->gateway) != 1) fail("--net: bad gateway %s", gateway);
}

static void write_sysctl(const char *fmt, const char *ifname, const char *value, int required) {
    char path[128];
    snprintf(path, sizeof path, fmt, ifname);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 && !required) return;
    if (fd < 0 || write(fd, value, strlen(value)) < 0) fail("write %s: %s", path, strerror(errno));
    close(fd);
}

/* The host's end (in the host's network namespace): a veth pair whose other end is eth0 in the machine's
 * namespace, made down and without a route (see attach_veth); proxy ARP answers for the gateway and the pool's
 * other nodes, a strict reverse-path filter drops whatever the machine sends from an address that is not its
 * own (its root may change its addresses), and a /32 route brings the machine's traffic back. */
static void create_veth(const struct netspec *n, int netns_fd) {
    int fd = nl_open();
    for (int attempt = 0;; attempt++) {
        struct nlreq r;
        struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC};
        nl_start(&r, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifi, sizeof ifi);
        nl_put(&r, IFLA_IFNAME, n->veth, strlen(n->veth) + 1);
        /* One queue each way, asked for up front: a veth made with one queue per CPU and cut down to one
         * afterwards waits for an RCU grace period per end. */
        unsigned one = 1;
        nl_put(&r, IFLA_NUM_TX_QUEUES, &one, sizeof one);
        nl_put(&r, IFLA_NUM_RX_QUEUES, &one, sizeof one);
        struct rtattr *info = nl_put(&r, IFLA_LINKINFO, NULL, 0);
        nl_put(&r, IFLA_INFO_KIND, "veth", 5);
        struct rtattr *data = nl_put(&r, IFLA_INFO_DATA, NULL, 0);
        struct ifinfomsg peer_head = {.ifi_family = AF_UNSPEC};
        struct rtattr *peer = nl_put(&r, VETH_INFO_PEER, &peer_head, sizeof peer_head);
        nl_put(&r, IFLA_IFNAME, "eth0", 5);
        nl_put(&r, IFLA_NUM_TX_QUEUES, &one, sizeof one);
        nl_put(&r, IFLA_NUM_RX_QUEUES, &one, sizeof one);
        unsigned nsfd = (unsigned)netns_fd;
        nl_put(&r, IFLA_NET_NS_FD, &nsfd, sizeof nsfd);
        nl_end(&r, peer);
        nl_end(&r, data);
        nl_end(&r, info);
        int err = nl_talk(fd, &r);
        if (err == EEXIST && attempt == 0) {
            /* Left by an earlier incarnation of this machine whose namespace is still being torn down. */
            struct ifinfomsg del = {.ifi_family = AF_UNSPEC};
            nl_start(&r, RTM_DELLINK, 0, &del, sizeof del);
            nl_put(&r, IFLA_IFNAME, n->veth, strlen(n->veth) + 1);
            nl_talk(fd, &r);
            continue;
        }
        if (err) fail("create veth %s: %s", n->veth, strerror(err));
        break;
    }
    write_sysctl("/proc/sys/net/ipv4/conf/%s/proxy_arp", n->veth, "1", 1);
    write_sysctl("/proc/sys/net/ipv4/conf/%s/rp_filter", n->veth, "1", 1);
    write_sysctl("/proc/sys/net/ipv6/conf/%s/disable_ipv6", n->veth, "1", 0);
    close(fd);
}

/* The host's end, made by create_veth (now, or ahead in a reserve shell, which also brought it up: `up`): up,
 * with the /32 route to the machine's address. Until then it has no route (and no address): the host sends
 * nothing into the namespace, and the strict reverse-path filter drops whatever would come out of it. */
static int veth_index(const char *veth) {
    int index = (int)if_nametoindex(veth);
    if (!index) fail("veth %s: %s", veth, strerror(errno));
    return index;
}

static void attach_veth(const struct netspec *n, int up) {
    int fd = nl_open();
    int index = veth_index(n->veth);
    if (!up) link_up(fd, index, n->veth);
    add_route(fd, n->address, 32, NULL, index, RT_SCOPE_LINK, 0);
    close(fd);
}

static void configure_loopback(void) {
    int fd = nl_open();
    link_up(fd, 1, "lo");
    close(fd);
}

/* Inside a machine's new network namespace, before eth0 comes up: no IPv6 on it. The host's end has none
 * (nodes are on IPv4 subnets), so a link-local address would only cost its set-up and duplicate address
 * detection at every boot; lo keeps ::1. Written through the host's /proc by a host root that has entered
 * the namespace (a machine's own /proc/sys is read-only). */
static void eth0_without_ipv6(void) {
    write_sysctl("/proc/sys/net/ipv6/conf/%s/disable_ipv6", "eth0", "1", 0);
}

/* The machine's end (inside its network namespace, as its root): lo and eth0 up (unless a reserve shell
 * brought them up ahead: `up`), the address, the default route through the gateway (on-link: the host's end
 * answers ARP for it). */
static void configure_inside(const struct netspec *n, int up) {
    int fd = nl_open();
    if (!up) link_up(fd, 1, "lo");
    int index = (int)if_nametoindex("eth0");
    if (!index) fail("eth0: %s", strerror(errno));
    struct nlreq r;
    struct ifaddrmsg ifa = {.ifa_family = AF_INET, .ifa_prefixlen = (unsigned char)n->prefix,
                            .ifa_scope = RT_SCOPE_UNIVERSE, .ifa_index = (unsigned)index};
    nl_start(&r, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &ifa, sizeof ifa);
    nl_put(&r, IFA_LOCAL, &n->address, sizeof n->address);
    nl_put(&r, IFA_ADDRESS, &n->address, sizeof n->address);
    int err = nl_talk(fd, &r);
    if (err) fail("address on eth0: %s", strerror(err));
    if (!up) link_up(fd, index, "eth0");
    struct in_addr any = {0};
    add_route(fd, any, 0, &n->gateway, index, RT_SCOPE_UNIVERSE, 1);
    close(fd);
}

/* ------------------------------------------------------------------------------------------------ init */

enum { ACT_OVERLAY, ACT_BIND, ACT_TMPFS };

struct action {
    int kind;
    const char *target; /* inside the machine ("/" = the root overlay) */
    const char *source; /* bind source (host path) or tmpfs options */
    int read_only;
    const char **lowers; /* overlay: top first */
    int nlower;
    const char *upper, *work;
    const char *host_mask; /* --lower-host: the bottom layer is the masked host root (userns machines) */
    int is_volatile;
    int idmap; /* --idbind/--roidbind: a file system mounted in the node (see do_idbind) */
};

static int needs_new_api(const struct action *a) {
    size_t total = 64 + strlen(OVERLAY_FIXED_OPTIONS);
    const char *paths[2] = {a->upper, a->work};
    for (int i = 0; i < a->nlower + 2; i++) {
        const char *p = i < a->nlower ? a->lowers[i] : paths[i - a->nlower];
        if (strpbrk(p, ",:\\")) return 1;
        total += strlen(p) + 12;
    }
    return total > MOUNT_OPTIONS_MAX;
}

static void mount_overlay_legacy(const struct action *a, const char *where) {
    size_t len = 128 + strlen(OVERLAY_FIXED_OPTIONS) + strlen(a->upper) + strlen(a->work);
    for (int i = 0; i < a->nlower; i++) len += strlen(a->lowers[i]) + 1;
    char *opts = xcalloc(len, 1);
    strcpy(opts, "lowerdir=");
    for (int i = 0; i < a->nlower; i++) {
        if (i) strcat(opts, ":");
        strcat(opts, a->lowers[i]);
    }
    strcat(opts, ",upperdir=");
    strcat(opts, a->upper);
    strcat(opts, ",workdir=");
    strcat(opts, a->work);
    strcat(opts, "," OVERLAY_FIXED_OPTIONS);
    if (a->is_volatile) strcat(opts, ",volatile");
    if (mount("overlay", where, "overlay", 0, opts) < 0)
        fail("mount overlay on %s (%s): %s", a->target, opts, strerror(errno));
    free(opts);
}

static void fscfg(int fsfd, unsigned cmd, const char *key, const char *value, const char *target) {
    if (syscall(SYS_fsconfig, fsfd, cmd, key, value, 0) < 0)
        fail("overlay on %s: fsconfig %s=%s: %s", target, key ? key : "create", value ? value : "", strerror(errno));
}

/* A lower layer given as a detached mount (an id-mapped clone, or the machine's own host-root overlay). */
static void fscfg_lower_fd(int fsfd, int fd, const char *target) {
    if (syscall(SYS_fsconfig, fsfd, SH_FSCONFIG_SET_FD, "lowerdir+", NULL, fd) == 0) return;
    char path[64]; /* kernels whose overlayfs takes lower layers by path only */
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    fscfg(fsfd, SH_FSCONFIG_SET_STRING, "lowerdir+", path, target);
}

static int overlay_open(const char *target) {
    int fsfd = (int)syscall(SYS_fsopen, "overlay", SH_FSOPEN_CLOEXEC);
    if (fsfd < 0) fail("overlay on %s: fsopen: %s (a kernel >= 6.8 is needed)", target, strerror(errno));
    return fsfd;
}

static int overlay_create(int fsfd, const char *target, unsigned attrs) {
    fscfg(fsfd, SH_FSCONFIG_CMD_CREATE, NULL, NULL, target);
    int mfd = (int)syscall(SYS_fsmount, fsfd, SH_FSMOUNT_CLOEXEC, attrs);
    if (mfd < 0) fail("overlay on %s: fsmount: %s", target, strerror(errno));
    close(fsfd);
    return mfd;
}

/* The masked host root for one machine: a read-only overlay of the id-mapped mask and the id-mapped `/`
 * (overlayfs itself cannot be id-mapped, so the shared host base of machines without a user namespace cannot
 * serve here). Returns the detached mount. */
static int host_root_layer(const char *mask, int userns_fd) {
    int fsfd = overlay_open("/ (host base)");
    int mask_fd = idmapped_tree(mask, userns_fd), root_fd = idmapped_tree("/", userns_fd);
    fscfg_lower_fd(fsfd, mask_fd, "/ (host base)");
    fscfg_lower_fd(fsfd, root_fd, "/ (host base)");
    int mfd = overlay_create(fsfd, "/ (host base)", 0x1 /* MOUNT_ATTR_RDONLY */);
    dissolve_later(mask_fd); /* the overlay holds clones of its own */
    dissolve_later(root_fd);
    return mfd;
}

/* userns_fd >= 0: every lower layer is mounted through an id-mapped clone (the upper is not: what the
 * machine writes keeps its host ids, those of the machine's range). */
static void mount_overlay_new_api(const struct action *a, const char *where, int userns_fd) {
    int fsfd = overlay_open(a->target);
    int *fds = xcalloc((size_t)a->nlower + 1, sizeof *fds), nfds = 0;
    for (int i = 0; i < a->nlower; i++) {
        if (userns_fd < 0) {
            fscfg(fsfd, SH_FSCONFIG_SET_STRING, "lowerdir+", a->lowers[i], a->target);
            continue;
        }
        fds[nfds] = idmapped_tree(a->lowers[i], userns_fd);
        fscfg_lower_fd(fsfd, fds[nfds++], a->target);
    }
    if (a->host_mask) {
        if (userns_fd < 0) fail("--lower-host needs --userns");
        fds[nfds] = host_root_layer(a->host_mask, userns_fd);
        fscfg_lower_fd(fsfd, fds[nfds++], a->target);
    }
    fscfg(fsfd, SH_FSCONFIG_SET_STRING, "upperdir", a->upper, a->target);
    fscfg(fsfd, SH_FSCONFIG_SET_STRING, "workdir", a->work, a->target);
    fscfg(fsfd, SH_FSCONFIG_SET_STRING, "redirect_dir", "off", a->target);
    fscfg(fsfd, SH_FSCONFIG_SET_STRING, "metacopy", "off", a->target);
    fscfg(fsfd, SH_FSCONFIG_SET_STRING, "index", "off", a->target);
    if (a->is_volatile) fscfg(fsfd, SH_FSCONFIG_SET_FLAG, "volatile", NULL, a->target);
    int mfd = overlay_create(fsfd, a->target, 0);
    if (syscall(SYS_move_mount, mfd, "", AT_FDCWD, where, SH_MOVE_MOUNT_F_EMPTY_PATH) < 0)
        fail("overlay on %s: move_mount: %s", a->target, strerror(errno));
    close(mfd);
    for (int i = 0; i < nfds; i++) dissolve_later(fds[i]);
    free(fds);
}

static void do_bind(const struct action *a, const char *where) {
    struct stat st;
    if (stat(a->source, &st) < 0) fail("bind source %s: %s", a->source, strerror(errno));
    ensure_mountpoint(where, S_ISDIR(st.st_mode));
    if (mount(a->source, where, NULL, MS_BIND | MS_REC, NULL) < 0)
        fail("bind %s on %s: %s", a->source, a->target, strerror(errno));
    if (a->read_only &&
        mount(NULL, where, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
        fail("remount %s read-only: %s", a->target, strerror(errno));
}

/* A file system mounted in a node (a pool's mountConfiguration: a Shoal container's directory). In a user
 * namespace it is an id-mapped bind: the node's ids are the host's ids there, so its root reads and writes
 * the files as the host's root owns them (the server keeps serving them as blobs, and the node's id range
 * never comes to own them). Without one, a plain bind does the same. The source is not followed if it is a
 * link; the mount point was made by the host agent without following links. */
#define SH_AT_SYMLINK_NOFOLLOW 0x100
#define SH_MOUNT_ATTR_RDONLY 0x1ull
#define SH_MOUNT_ATTR_NOSUID 0x2ull
#define SH_MOUNT_ATTR_NODEV 0x4ull
static void do_idbind(const struct action *a, const char *where, int userns_fd) {
    if (userns_fd < 0) {
        do_bind(a, where);
        return;
    }
    ensure_mountpoint(where, 1);
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, a->source,
                          SH_OPEN_TREE_CLONE | SH_AT_SYMLINK_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) fail("open_tree %s: %s", a->source, strerror(errno));
    struct sh_mount_attr attr = {SH_MOUNT_ATTR_IDMAP | SH_MOUNT_ATTR_NOSUID | SH_MOUNT_ATTR_NODEV |
                                 (a->read_only ? SH_MOUNT_ATTR_RDONLY : 0), 0, 0, (uint64_t)userns_fd};
    if (syscall(SYS_mount_setattr, fd, "", SH_AT_EMPTY_PATH, &attr, sizeof attr) < 0)
        fail("id-mapped mount of %s: %s (its file system must support id-mapped mounts)", a->source, strerror(errno));
    if (syscall(SYS_move_mount, fd, "", AT_FDCWD, where, SH_MOVE_MOUNT_F_EMPTY_PATH) < 0)
        fail("mount %s on %s: move_mount: %s", a->source, a->target, strerror(errno));
    release_later(fd);
}

/* tmpfs options, owned by the machine's root when it has a user namespace. */
static char *tmpfs_options(const char *base) {
    char *opts = xcalloc(strlen(base) + 64, 1);
    if (g_owner >= 0) sprintf(opts, "%s%suid=%ld,gid=%ld", base, base[0] ? "," : "", g_owner, g_owner);
    else strcpy(opts, base);
    return opts;
}

static void setup_dev(const char *root) {
    char *dev = joinpath(root, "/dev");
    ensure_mountpoint(dev, 1);
    /* One file system for /dev and /dev/shm (a directory of it, as large as a tmpfs is by default). */
    char *dev_opts = tmpfs_options("mode=755");
    if (mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, dev_opts) < 0)
        fail("mount /dev: %s", strerror(errno));
    free(dev_opts);
    static const struct { const char *name; unsigned major, minor; } nodes[] = {
        {"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
    };
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        char *path = joinpath(dev, nodes[i].name);
        /* With a user namespace, the host's device nodes are bound: a mount point cannot be deleted or
         * replaced by the machine's root (it owns /dev), so /dev/null stays /dev/null for every task. */
        if (g_owner >= 0 || mknod(path, S_IFCHR | 0666, makedev(nodes[i].major, nodes[i].minor)) < 0) {
            /* No CAP_MKNOD (or a nodev parent): bind the host's device node instead. */
            char *host = joinpath("/dev", nodes[i].name);
            /* The mount point: an empty file in the fresh /dev (one call, not ensure_mountpoint's walk). */
            if (mknod(path, S_IFREG | 0644, 0) < 0 && errno != EEXIST) fail("create %s: %s", path, strerror(errno));
            if (mount(host, path, NULL, MS_BIND, NULL) < 0) fail("bind %s: %s", host, strerror(errno));
            free(host);
        } else if (chmod(path, 0666) < 0) {
            /* The umask trimmed the mode: unprivileged users (apt's _apt) must be able to write /dev/null. */
            fail("chmod %s: %s", path, strerror(errno));
        }
        free(path);
    }
    char *pts = joinpath(dev, "/pts"), *shm = joinpath(dev, "/shm");
    if (mkdir(pts, 0755) < 0 || mkdir(shm, 01777) < 0 || chmod(shm, 01777) < 0 ||
        (g_owner >= 0 && chown(shm, (uid_t)g_owner, (gid_t)g_owner) < 0))
        fail("mkdir in /dev: %s", strerror(errno));
    char pts_opts[128];
    snprintf(pts_opts, sizeof pts_opts, "newinstance,ptmxmode=0666,mode=0620,gid=%ld", g_owner >= 0 ? g_owner + 5 : 5);
    if (mount("devpts", pts, "devpts", MS_NOSUID | MS_NOEXEC, pts_opts) < 0)
        fail("mount /dev/pts: %s", strerror(errno));
    static const char *links[][2] = {
        {"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
        {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
    };
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        char *path = joinpath(dev, links[i][1]);
        if (symlink(links[i][0], path) < 0) fail("symlink %s: %s", path, strerror(errno));
        free(path);
    }
    free(pts);
    free(shm);
    free(dev);
}

static void noop_handler(int sig) { (void)sig; }

/* The starter's listening socket at PATH (any length: bound through /proc/self/fd of its directory), mode
 * 0700 (umask 077: nobody but its owner), owned by whoever calls this (the host's root). */
static int listen_control(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash || !slash[1]) fail("--control %s: want DIR/NAME", path);
    char *dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
    if (!dir) fail("out of memory");
    int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) fail("--control %s: %s", dir, strerror(errno));
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if ((size_t)snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d/%s", dfd, slash + 1) >=
        sizeof addr.sun_path)
        fail("--control %s: the name is too long", path);
    if (unlinkat(dfd, slash + 1, 0) < 0 && errno != ENOENT) fail("--control %s: %s", path, strerror(errno));
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) fail("socket: %s", strerror(errno));
    mode_t old = umask(077);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) fail("bind %s: %s", path, strerror(errno));
    umask(old);
    if (listen(fd, 64) < 0) fail("listen %s: %s", path, strerror(errno));
    close(dfd);
    free(dir);
    return fd;
}

static void __attribute__((noreturn)) starter_loop(int control, const sigset_t *signals);

/* pid 1 of the machine. The kernel drops signals that pid 1 has no handler for, so the ones we act on get a
 * (never called) handler and are then consumed synchronously (sigwaitinfo, or the starter's signalfd). With
 * a control socket it is also the machine's starter (see starter_loop). */
static void __attribute__((noreturn)) init_loop(int control) {
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = noop_handler;
    int handled[] = {SIGCHLD, SIGTERM, SIGPWR};
    for (size_t i = 0; i < sizeof handled / sizeof handled[0]; i++) sigaction(handled[i], &sa, NULL);
    prctl(PR_SET_NAME, "shoal-init", 0, 0, 0);
    if (control >= 0) {
        sigset_t acted;
        sigemptyset(&acted);
        for (size_t i = 0; i < sizeof handled / sizeof handled[0]; i++) sigaddset(&acted, handled[i]);
        starter_loop(control, &acted);
    }
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0) { /* reap every exited orphan */ }
        siginfo_t si;
        int sig = sigwaitinfo(&all, &si);
        if (sig == SIGTERM || sig == SIGPWR) {
            kill(-1, SIGKILL); /* everything in the machine; exiting pid 1 would do it too, this is just faster */
            _exit(0);
        }
    }
}

/* What `init` builds: its arguments, parsed and checked. */
struct init_spec {
    struct action *acts;
    int nact, sysfs;
    const char *root, *hostname;
    long uid_base, uid_count;     /* --userns; count 0: no user namespace */
    int with_net;                 /* --net given */
    int own_netns;                /* --net or --netns: a network namespace of its own */
    struct netspec net;
    const char **cgroups;
    int ncgroups;
    const char *control;          /* --control: the socket the machine's init starts commands from */
    const char *shell[SHELL_NS];  /* --shell USER NET IPC UTS: namespaces made ahead (make_shell), by path */
};

static void parse_init(int argc, char **argv, struct init_spec *sp) {
    struct action *acts = xcalloc((size_t)argc, sizeof *acts);
    memset(sp, 0, sizeof *sp);
    sp->cgroups = xcalloc((size_t)argc, sizeof *sp->cgroups);
    int nact = 0, sysfs = 0;
    const char *root = NULL, *hostname = NULL;
    struct action *cur = NULL;
    for (int i = 0; i < argc; i++) {
        const char *opt = argv[i];
        const char *v1 = i + 1 < argc ? argv[i + 1] : NULL, *v2 = i + 2 < argc ? argv[i + 2] : NULL;
#define NEED1() do { if (!v1) fail("%s needs a value", opt); i += 1; } while (0)
#define NEED2() do { if (!v1 || !v2) fail("%s needs two values", opt); i += 2; } while (0)
        if (!strcmp(opt, "--id")) { NEED1(); }
        else if (!strcmp(opt, "--root")) { NEED1(); root = v1; }
        else if (!strcmp(opt, "--hostname")) { NEED1(); hostname = v1; }
        else if (!strcmp(opt, "--sysfs")) { sysfs = 1; }
        else if (!strcmp(opt, "--empty")) { NEED1(); g_empty_dir = v1; }
        else if (!strcmp(opt, "--userns")) {
            NEED1();
            char *end;
            sp->uid_base = strtol(v1, &end, 10);
            sp->uid_count = *end == ':' ? strtol(end + 1, &end, 10) : 0;
            if (*end || sp->uid_base <= 0 || sp->uid_count <= 0 || sp->uid_count > 1L << 24)
                fail("--userns %s: want BASE:COUNT", v1);
        } else if (!strcmp(opt, "--net")) {
            if (i + 3 >= argc) fail("--net needs VETH ADDRESS/PREFIX GATEWAY");
            parse_net(argv[i + 1], argv[i + 2], argv[i + 3], &sp->net);
            sp->with_net = sp->own_netns = 1;
            i += 3;
        } else if (!strcmp(opt, "--netns")) {
            sp->own_netns = 1;
        } else if (!strcmp(opt, "--shell")) {
            if (i + SHELL_NS >= argc) fail("--shell needs USER NET IPC UTS");
            for (int k = 0; k < SHELL_NS; k++) sp->shell[k] = argv[i + 1 + k];
            i += SHELL_NS;
        } else if (!strcmp(opt, "--cgroup")) { NEED1(); sp->cgroups[sp->ncgroups++] = v1; }
        else if (!strcmp(opt, "--control")) { NEED1(); sp->control = v1; }
        else if (!strcmp(opt, "--lower-host")) {
            NEED1();
            if (!cur || cur->kind != ACT_OVERLAY) fail("%s must follow --overlay", opt);
            cur->host_mask = v1;
        }
        else if (!strcmp(opt, "--overlay")) {
            NEED1();
            cur = &acts[nact++];
            cur->kind = ACT_OVERLAY;
            cur->target = v1;
            cur->lowers = xcalloc((size_t)argc, sizeof *cur->lowers);
        } else if (!strcmp(opt, "--lower") || !strcmp(opt, "--upper") || !strcmp(opt, "--work")) {
            NEED1();
            if (!cur || cur->kind != ACT_OVERLAY) fail("%s must follow --overlay", opt);
            if (opt[2] == 'l') cur->lowers[cur->nlower++] = v1;
            else if (opt[2] == 'u') cur->upper = v1;
            else cur->work = v1;
        } else if (!strcmp(opt, "--volatile")) {
            if (!cur || cur->kind != ACT_OVERLAY) fail("--volatile must follow --overlay");
            cur->is_volatile = 1;
        } else if (!strcmp(opt, "--bind") || !strcmp(opt, "--robind") || !strcmp(opt, "--idbind") ||
                   !strcmp(opt, "--roidbind")) {
            NEED2();
            cur = &acts[nact++];
            cur->kind = ACT_BIND;
            cur->source = v1;
            cur->target = v2;
            cur->read_only = opt[2] == 'r';
            cur->idmap = strstr(opt, "idbind") != NULL;
        } else if (!strcmp(opt, "--tmpfs")) {
            NEED2();
            cur = &acts[nact++];
            cur->kind = ACT_TMPFS;
            cur->target = v1;
            cur->source = v2;
        } else fail("init: unknown option %s", opt);
#undef NEED1
#undef NEED2
    }
    if (!root) fail("init: --root is required");
    if (sp->shell[0] && (!sp->uid_count || !sp->own_netns))
        fail("init: --shell needs --userns and --net or --netns (it holds a user and a network namespace)");
    if (nact == 0 || acts[0].kind != ACT_OVERLAY || strcmp(acts[0].target, "/"))
        fail("init: the first mount must be --overlay /");
    for (int i = 0; i < nact; i++) {
        const struct action *a = &acts[i];
        if (a->target[0] != '/') fail("init: mount target %s is not absolute", a->target);
        if (a->kind == ACT_OVERLAY && (!a->nlower || !a->upper || !a->work))
            fail("init: overlay %s needs --lower, --upper and --work", a->target);
    }

    sp->acts = acts;
    sp->nact = nact;
    sp->sysfs = sysfs;
    sp->root = root;
    sp->hostname = hostname;
}

/* Mount `what` (a host file or directory) over `path` inside the machine, read-only, if `path` exists. */
static void mask_path(const char *root, const char *path, const char *what) {
    char *where = joinpath(root, path);
    struct stat st;
    if (stat(where, &st) == 0) {
        if (S_ISDIR(st.st_mode) && g_empty_dir) {
            if (mount(g_empty_dir, where, NULL, MS_BIND, NULL) < 0 ||
                mount(NULL, where, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
                fail("mask %s: %s", path, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            if (mount("tmpfs", where, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0") < 0)
                fail("mask %s: %s", path, strerror(errno));
        } else if (mount(what, where, NULL, MS_BIND, NULL) < 0) {
            fail("mask %s: %s", path, strerror(errno));
        }
    }
    free(where);
}

static void read_only_path(const char *root, const char *path) {
    char *where = joinpath(root, path);
    struct stat st;
    if (stat(where, &st) == 0 &&
        (mount(where, where, NULL, MS_BIND | MS_REC, NULL) < 0 ||
         mount(NULL, where, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0))
        fail("make %s read-only: %s", path, strerror(errno));
    free(where);
}

/* What a container runtime hides of /proc and /sys: host-wide kernel state that a node has no business
 * reading (kcore, keys, timer lists) or triggering (sysrq), and read-only views of the kernel's tunables. Made
 * before the machine enters its user namespace, so these mounts are locked there. */
static void mask_kernel_files(const char *root) {
    static const char *masked[] = {"/proc/kcore", "/proc/keys", "/proc/sysrq-trigger", "/proc/timer_list",
                                   "/proc/latency_stats", "/proc/sched_debug", "/proc/acpi", "/proc/scsi",
                                   "/sys/firmware"};
    for (size_t i = 0; i < sizeof masked / sizeof *masked; i++) mask_path(root, masked[i], "/dev/null");
    static const char *read_only[] = {"/proc/sys", "/proc/irq", "/proc/bus", "/proc/fs", "/proc/asound"};
    for (size_t i = 0; i < sizeof read_only / sizeof *read_only; i++) read_only_path(root, read_only[i]);
}

/* The machine's pid 1 (the first process of a new pid namespace): builds the machine, says "ok" on ready_w
 * (errors go there too), then stays as its init. */
static void __attribute__((noreturn)) init_machine(const struct init_spec *sp, int ready_w) {
    const struct action *acts = sp->acts;
    int nact = sp->nact, sysfs = sp->sysfs;
    const char *root = sp->root, *hostname = sp->hostname;
    int hardened = sp->uid_count > 0;
    g_errfd = ready_w;
    g_owner = hardened ? sp->uid_base : -1;
    g_hardened = hardened;
    /* The starter's socket is a host file, made while we are still the host's root in the host's mount
     * namespace: only the host's root can reach it, nothing inside the machine can. */
    int control = sp->control ? listen_control(sp->control) : -1;
    umask(022);
    /* First, while we still see the host's /sys and /proc: the cgroups, the namespaces, the host's end of
     * the network. */
    join_cgroups(sp->cgroups, sp->ncgroups);
    int userns_fd, netns_fd, shell_fds[SHELL_NS];
    if (sp->shell[0]) {
        enter_shell(sp->shell, shell_fds);
        userns_fd = shell_fds[0];
        netns_fd = shell_fds[1];
    } else {
        make_namespaces(sp->uid_base, sp->uid_count, sp->own_netns, &userns_fd, &netns_fd, NULL);
        if (sp->with_net) create_veth(&sp->net, netns_fd);
    }
    if (sp->with_net) attach_veth(&sp->net, sp->shell[0] != NULL);
    /* Without a user namespace the machine's mount and uts namespaces are made here and the machine's root is
     * the host's root. With one, these first namespaces only hold Shoal's mounts; the machine's own are made
     * once inside its user namespace (below). */
    if (unshare(CLONE_NEWNS | (hardened ? 0 : CLONE_NEWUTS)) < 0) fail("unshare(mount, uts): %s", strerror(errno));
    /* Nothing we mount may propagate back to the host, and host mounts must not appear in here later. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) fail("make / private: %s", strerror(errno));
    /* sysfs shows the network namespace of whoever mounts it: the machine's own. */
    if (netns_fd >= 0 && setns(netns_fd, CLONE_NEWNET) < 0) fail("setns net: %s", strerror(errno));
    if (sp->with_net && !sp->shell[0]) eth0_without_ipv6();
    for (int i = 0; i < nact; i++) {
        const struct action *a = &acts[i];
        char *where = i == 0 ? strdup(root) : joinpath(root, a->target);
        if (!where) fail("out of memory");
        if (a->kind == ACT_OVERLAY) {
            if (i) ensure_mountpoint(where, 1);
            if (hardened || a->host_mask || needs_new_api(a)) mount_overlay_new_api(a, where, userns_fd);
            else mount_overlay_legacy(a, where);
            if (i == 0) {
                /* From here on, paths in the machine are walked from its root overlay (our working directory),
                 * not from the host's / through every component of the machine's directory each time. */
                if (chdir(where) < 0) fail("chdir %s: %s", where, strerror(errno));
                root = ".";
            }
        } else if (a->kind == ACT_BIND && a->idmap) {
            do_idbind(a, where, hardened ? userns_fd : -1);
        } else if (a->kind == ACT_BIND) {
            do_bind(a, where);
        } else {
            ensure_mountpoint(where, 1);
            char *opts = tmpfs_options(a->source);
            if (mount("tmpfs", where, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
                fail("mount tmpfs on %s: %s", a->target, strerror(errno));
            free(opts);
        }
        free(where);
    }
    setup_dev(root);
    char *proc = joinpath(root, "/proc");
    ensure_mountpoint(proc, 1);
    if (mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        fail("mount /proc: %s", strerror(errno));
    if (sysfs) {
        char *sys = joinpath(root, "/sys");
        ensure_mountpoint(sys, 1);
        /* Best effort: a read-only sysfs is a convenience (lsblk, nproc fallbacks), not a requirement. */
        if (mount("sysfs", sys, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) { }
    }
    if (hardened) mask_kernel_files(root);
    if (!hardened && hostname && sethostname(hostname, strlen(hostname)) < 0)
        fail("sethostname: %s", strerror(errno));
    /* (Our working directory is the machine's root since its overlay was mounted, above.) */
    park_detached(); /* dissolved with the old root, below */
    if (syscall(SYS_pivot_root, ".", ".") < 0) fail("pivot_root: %s", strerror(errno));
    if (umount2(".", MNT_DETACH) < 0) fail("detach the old root: %s", strerror(errno));
    if (chdir("/") < 0) fail("chdir /: %s", strerror(errno));
    if (hardened) {
        /* Become the machine's root, in namespaces of its own that it may change. Copying the mount
         * namespace into the user namespace locks every mount made above. The pid namespace stays the one we
         * are pid 1 of (owned by the host): nothing inside can signal or trace this init. */
        /* The namespace of Shoal's mounts goes with its last reference: ours, released once we are ready. */
        int shoal_ns = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
        if (shoal_ns < 0) fail("open /proc/self/ns/mnt: %s", strerror(errno));
        release_later(shoal_ns);
        enter_userns(userns_fd, sp->shell[0] != NULL, sp->uid_base, sp->uid_count);
        if (sp->shell[0]) { /* a shell's IPC and UTS namespaces were made with it, in its user namespace */
            if (setns(shell_fds[2], CLONE_NEWIPC) < 0 || setns(shell_fds[3], CLONE_NEWUTS) < 0)
                fail("setns ipc, uts: %s", strerror(errno));
            close(shell_fds[2]);
            close(shell_fds[3]);
        }
        int own = CLONE_NEWNS | (sp->shell[0] ? 0 : CLONE_NEWUTS | CLONE_NEWIPC) | (sp->ncgroups ? CLONE_NEWCGROUP : 0);
        if (unshare(own) < 0) fail("unshare(mount, uts, ipc, cgroup) in the user namespace: %s", strerror(errno));
        if (hostname && sethostname(hostname, strlen(hostname)) < 0) fail("sethostname: %s", strerror(errno));
        if (sp->with_net) configure_inside(&sp->net, sp->shell[0] != NULL);
        else if (sp->own_netns && !sp->shell[0]) configure_loopback();
        drop_bounding_set();
        close(userns_fd);
    } else if (sp->with_net) {
        configure_inside(&sp->net, 0);
    } else if (sp->own_netns) {
        configure_loopback();
    }
    if (netns_fd >= 0) close(netns_fd);
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) fail("open /dev/null: %s", strerror(errno));
    if (write(ready_w, "ok", 2) != 2) _exit(125);
    /* Hold nothing of the host and nothing of the caller: no pipes, no terminal. */
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    close(ready_w); /* explicitly: the caller waits for this end-of-file, close_range needs Linux 5.9 */
    if (control >= 0 && control != CONTROL_FD) {
        if (dup3(control, CONTROL_FD, O_CLOEXEC) < 0) _exit(125);
        close(control);
    }
    syscall(SYS_close_range, control >= 0 ? CONTROL_FD + 1u : 3u, ~0u, 0u); /* also what release_later() kept */
    for (int i = 0; i < g_ndeferred; i++) /* kernels without close_range */
        if (control < 0 || g_deferred[i] != CONTROL_FD) close(g_deferred[i]);
    init_loop(control >= 0 ? CONTROL_FD : -1);
}

/* Wait for the init `pid` to say it is ready on ready_r. Returns 0, or 1 with the reason in msg (the init is
 * then killed and gone). */
static int await_ready(pid_t pid, int ready_r, char *msg, size_t cap) {
    size_t got = 0;
    for (;;) {
        ssize_t n = read(ready_r, msg + got, cap - 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
        if (got >= cap - 1) break;
    }
    msg[got] = '\0';
    close(ready_r);
    if (got == 2 && !memcmp(msg, "ok", 2)) return 0;
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) { }
    if (got == 0) snprintf(msg, cap, "%s: the machine's init died during setup\n", g_prog);
    return 1;
}

static int cmd_init(int argc, char **argv) {
    struct init_spec sp;
    parse_init(argc, argv, &sp);
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0) fail("pipe: %s", strerror(errno));
    if (unshare(CLONE_NEWPID) < 0) fail("unshare(CLONE_NEWPID): %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) fail("fork: %s", strerror(errno));
    if (pid == 0) {
        close(ready[0]);
        init_machine(&sp, ready[1]);
    }
    close(ready[1]);
    char msg[1024];
    if (await_ready(pid, ready[0], msg, sizeof msg) == 0) {
        printf("%d\n", (int)pid);
        return 0;
    }
    fputs(msg, stderr);
    return 1;
}


/* ------------------------------------------------------------------------------------------------ join */


enum { STAGE_NONE, STAGE_USER, STAGE_CWD, STAGE_EXEC, STAGE_HELPER };
static const char *stage_names[] = {"-", "user", "cwd", "exec", "helper"};

/* Resolve NAME or UID[:GID] with the machine's own /etc/passwd and /etc/group (a static binary cannot use
 * NSS modules, and the host's user database is the wrong one anyway). */
static int resolve_user(const char *spec, uid_t *uid, gid_t *gid, gid_t *groups, int *ngroups, int maxgroups) {
    char name[256] = "";
    int numeric = spec[0] >= '0' && spec[0] <= '9';
    long want_uid = -1, want_gid = -1;
    if (numeric) {
        char *end;
        want_uid = strtol(spec, &end, 10);
        if (*end == ':') want_gid = strtol(end + 1, &end, 10);
        if (*end) return EINVAL;
    }
    FILE *f = fopen("/etc/passwd", "re");
    int found = 0;
    if (f) {
        char line[1024];
        while (fgets(line, sizeof line, f)) {
            char *fields[7] = {0};
            char *p = line;
            int n = 0;
            for (char *tok = strsep(&p, ":"); tok && n < 7; tok = strsep(&p, ":")) fields[n++] = tok;
            if (n < 4) continue;
            long u = strtol(fields[2], NULL, 10), g = strtol(fields[3], NULL, 10);
            if ((numeric && u == want_uid) || (!numeric && !strcmp(fields[0], spec))) {
                snprintf(name, sizeof name, "%s", fields[0]);
                *uid = (uid_t)u;
                *gid = (gid_t)(numeric && want_gid >= 0 ? want_gid : g);
                found = 1;
                break;
            }
        }
        fclose(f);
    }
    if (!found) {
        if (!numeric) return ENOENT;
        *uid = (uid_t)want_uid;
        *gid = (gid_t)(want_gid >= 0 ? want_gid : want_uid); /* unknown uid: its own group, never root's */
    }
    *ngroups = 0;
    groups[(*ngroups)++] = *gid;
    if (name[0] && (f = fopen("/etc/group", "re"))) {
        char line[4096];
        while (fgets(line, sizeof line, f) && *ngroups < maxgroups) {
            line[strcspn(line, "\n")] = '\0';
            char *p = line, *fields[4] = {0};
            int n = 0;
            for (char *tok = strsep(&p, ":"); tok && n < 4; tok = strsep(&p, ":")) fields[n++] = tok;
            if (n < 4) continue;
            for (char *m = strtok(fields[3], ","); m; m = strtok(NULL, ","))
                if (!strcmp(m, name)) { groups[(*ngroups)++] = (gid_t)strtol(fields[2], NULL, 10); break; }
        }
        fclose(f);
    }
    return 0;
}

struct join_opts {
    const char *cwd, *user;
    int make_cwd;        /* make the cwd's missing directories; its last make_cwd belong to the user */
    int in_fd, out_fd, err_fd;
    const char *in_path_inside, *out_path_inside, *err_path_inside; /* opened inside the machine */
    int userns_fd;       /* join: the machine's user namespace when it is not ours (entered by the shim) */
    int sandboxed;       /* the machine is hardened: the command runs with its sandbox (see task_child) */
    unsigned short filter_len;
    char **argv;
    /* The user, resolved by the shim before it forks the task (the task is a vfork child: no stdio there). */
    int user_err, ngroups, user_resolved;
    uid_t uid;
    gid_t gid, groups[64];
};

static void __attribute__((noreturn)) report_child_error(int errpipe, int stage, int err) {
    int msg[2] = {stage, err};
    if (write(errpipe, msg, sizeof msg) < 0) { }
    _exit(stage == STAGE_EXEC ? (err == ENOENT ? 127 : 126) : 125);
}

/* The task itself: runs in the machine's namespaces, below the shim. It is a vfork() child (the fork of the
 * shim's address space would be the most expensive step of a short task), so it only makes system calls:
 * no allocation, no stdio, no return. */
static void __attribute__((noreturn)) task_child(const struct join_opts *o, int errpipe) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL); /* signal masks and ignored signals survive exec: start clean */
    for (int sig = 1; sig < 32; sig++) {
        struct sigaction sa;
        if (sig != SIGKILL && sig != SIGSTOP && sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
            signal(sig, SIG_DFL);
    }
    if (o->in_fd >= 0) dup2(o->in_fd, 0);
    if (o->out_fd >= 0) dup2(o->out_fd, 1);
    if (o->err_fd >= 0) dup2(o->err_fd, 2);
    if (o->sandboxed) {
        /* The sandbox: seccomp while we still hold CAP_SYS_ADMIN in the machine's user namespace (no
         * no_new_privs needed for root's commands), no_new_privs for anyone else (sudo stays a plain program). */
        int err = install_seccomp(o->filter_len);
        if (err) report_child_error(errpipe, STAGE_USER, err);
        if (o->user && o->uid != 0 && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
            report_child_error(errpipe, STAGE_USER, errno);
    }
    if (o->user) {
        if (o->user_err) report_child_error(errpipe, STAGE_USER, o->user_err);
        if (setgroups((size_t)o->ngroups, o->groups) < 0 || setgid(o->gid) < 0 || setuid(o->uid) < 0)
            report_child_error(errpipe, STAGE_USER, errno);
    }
    if (o->cwd && chdir(o->cwd) < 0) report_child_error(errpipe, STAGE_CWD, errno);
    umask(022);
    execvp(o->argv[0], o->argv);
    report_child_error(errpipe, STAGE_EXEC, errno);
}

/* Kill every descendant of this process (a child subreaper, so orphans of the tree are re-parented to us
 * and cannot escape) and reap them all. Returns the task's wait status if it was reaped here. */
static void kill_tree(pid_t task, struct task_result *res) {
    pid_t self = getpid();
    size_t cap = 256;
    pid_t *pids = xcalloc(cap, sizeof *pids), *ppids = xcalloc(cap, sizeof *ppids);
    char *mark = NULL;
    for (;;) {
        size_t n = 0;
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
            char path[300], buf[512];
            snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) continue;
            ssize_t len = read(fd, buf, sizeof buf - 1);
            close(fd);
            if (len <= 0) continue;
            buf[len] = '\0';
            char *rp = strrchr(buf, ')'); /* the command name may contain spaces and parentheses */
            if (!rp) continue;
            char state;
            int ppid;
            if (sscanf(rp + 1, " %c %d", &state, &ppid) != 2) continue;
            if (n == cap) {
                cap *= 2;
                pids = realloc(pids, cap * sizeof *pids);
                ppids = realloc(ppids, cap * sizeof *ppids);
                if (!pids || !ppids) fail("out of memory");
            }
            pids[n] = (pid_t)atoi(e->d_name);
            ppids[n++] = (pid_t)ppid;
        }
        if (d) closedir(d);
        free(mark);
        mark = xcalloc(n, 1);
        /* Transitive closure of "parent is us or marked"; the process table is small inside one machine. */
        for (int changed = 1; changed;) {
            changed = 0;
            for (size_t i = 0; i < n; i++) {
                if (mark[i] || pids[i] == self) continue;
                int parent_marked = ppids[i] == self;
                for (size_t j = 0; j < n && !parent_marked; j++) parent_marked = mark[j] && pids[j] == ppids[i];
                if (parent_marked) mark[i] = changed = 1;
            }
        }
        for (size_t i = 0; i < n; i++)
            if (mark[i]) kill(pids[i], SIGKILL);
        int st;
        pid_t p = waitpid(-1, &st, 0);
        if (p < 0 && errno == ECHILD) break; /* no children left = no descendants left */
        if (p == task) { res->have_status = 1; res->wstatus = st; }
    }
    free(mark);
    free(pids);
    free(ppids);
}

/* Between the helper (outside the machine's pid namespace) and the task: makes the task a process group and
 * session of its own, adopts its orphans, and turns a SIGTERM from the helper into "kill the whole tree". */
/* The directories of an absolute path in the machine (its first `len` bytes), walked from "/" without following a
 * link at any step: a task's user owns its task directory and could plant one there for root to follow. With
 * `make`, missing directories are made on the way (mode 0755, root's), and the last `owned` components become
 * uid:gid's, made now or before. Returns an O_PATH descriptor of the last directory, or -1 with errno set. */
static int walk_inside(const char *path, size_t len, int make, int owned, uid_t uid, gid_t gid) {
    char buf[PATH_MAX];
    if (path[0] != '/' || len >= sizeof buf) { errno = EINVAL; return -1; }
    memcpy(buf, path, len);
    buf[len] = '\0';
    int total = 0;
    for (char *p = buf; *p; p++)
        if (*p != '/' && (p == buf || p[-1] == '/')) total++;
    int dir = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC), seen = 0;
    char *save = NULL;
    for (char *name = strtok_r(buf, "/", &save); dir >= 0 && name; name = strtok_r(NULL, "/", &save)) {
        seen++;
        if (!strcmp(name, ".") || !strcmp(name, "..")) { close(dir); errno = EINVAL; return -1; }
        if (make && mkdirat(dir, name, 0755) < 0 && errno != EEXIST) { close(dir); return -1; }
        int next = openat(dir, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int err = errno;
        close(dir);
        if (next < 0) { errno = err == ENOTDIR ? ELOOP : err; return -1; } /* (a link, to a directory or not) */
        if (make && seen > total - owned && fchownat(next, "", uid, gid, AT_EMPTY_PATH) < 0) {
            err = errno;
            close(next);
            errno = err;
            return -1;
        }
        dir = next;
    }
    return dir;
}

/* A file in the machine, opened with the rights of its root and without following a link: an output is made
 * anew (whatever a task left at that name is removed first; O_EXCL, so nothing planted meanwhile is opened). */
static int open_inside(const char *path, int output) {
    const char *slash = strrchr(path, '/');
    int dir = slash ? walk_inside(path, (size_t)(slash - path), 0, 0, 0, 0) : -1;
    if (dir < 0) fail("open %s in the machine: %s", path, strerror(slash ? errno : EINVAL));
    const char *name = slash + 1;
    if (output && unlinkat(dir, name, 0) < 0 && errno != ENOENT) fail("open %s in the machine: %s", path, strerror(errno));
    int fd = output ? openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644)
                    : openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    int err = errno;
    close(dir);
    if (fd < 0) fail("open %s in the machine: %s", path, strerror(err));
    return fd;
}

static void resolve_task_user(struct join_opts *o) {
    if (o->user && !o->user_resolved)
        o->user_err = resolve_user(o->user, &o->uid, &o->gid, o->groups, &o->ngroups, 64);
    o->user_resolved = 1;
}

/* The shim's start, in the machine (files opened, user namespace entered): a session and process group of
 * its own, a child subreaper (orphans of the task come to us), SIGTERM and SIGCHLD on a signalfd (*sfd), the
 * user resolved, the task vforked. Returns the task's pid; res says whether it could not be started. */
static pid_t start_task(struct join_opts *o, struct task_result *res, int *sfd) {
    if (setsid() < 0) { /* already a group leader: cannot happen right after fork */ }
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    *sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (*sfd < 0) fail("signalfd: %s", strerror(errno));
    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) < 0) fail("pipe: %s", strerror(errno));
    resolve_task_user(o);
    pid_t task = vfork();
    if (task < 0) fail("fork: %s", strerror(errno));
    if (task == 0) {
        close(errpipe[0]);
        task_child(o, errpipe[1]);
    }
    close(errpipe[1]);
    int msg[2];
    ssize_t n;
    while ((n = read(errpipe[0], msg, sizeof msg)) < 0 && errno == EINTR) { }
    if (n == (ssize_t)sizeof msg) { res->err_stage = msg[0]; res->err_no = msg[1]; }
    close(errpipe[0]);
    return task;
}

/* Files inside the machine are opened with the rights of the machine's root, never the host's. */
static void open_inside_files(struct join_opts *o) {
    if (o->make_cwd > 0 && o->cwd) { /* (an unknown user is reported when the task starts: its dirs are root's) */
        resolve_task_user(o);
        int as_root = !o->user || o->user_err;
        int dir = walk_inside(o->cwd, strlen(o->cwd), 1, o->make_cwd, as_root ? 0 : o->uid, as_root ? 0 : o->gid);
        if (dir < 0) fail("make %s in the machine: %s", o->cwd, strerror(errno));
        close(dir);
    }
    if (o->in_path_inside) o->in_fd = open_inside(o->in_path_inside, 0);
    if (o->out_path_inside) o->out_fd = open_inside(o->out_path_inside, 1);
    if (o->err_path_inside)
        o->err_fd = o->out_path_inside && !strcmp(o->out_path_inside, o->err_path_inside)
                        ? fcntl(o->out_fd, F_DUPFD_CLOEXEC, 3) : open_inside(o->err_path_inside, 1);
}

static void __attribute__((noreturn)) shim(struct join_opts *o, int result_fd) {
    g_shim_result_fd = result_fd;
    if (o->userns_fd >= 0) {
        enter_userns(o->userns_fd, 0, 0, 0);
        close(o->userns_fd);
        sound_mounts();
        drop_bounding_set();
    }
    open_inside_files(o);
    struct task_result res = {0, 0, 0, 0, ""};
    int sfd;
    pid_t task = start_task(o, &res, &sfd);
    int killing = 0;
    while (!res.have_status) {
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0)
            if (p == task) { res.have_status = 1; res.wstatus = st; }
        if (res.have_status) break;
        struct signalfd_siginfo si;
        if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si && si.ssi_signo == SIGTERM) {
            killing = 1;
            kill_tree(task, &res);
        }
    }
    if (killing) kill_tree(task, &res);
    if (write(result_fd, &res, sizeof res) < 0) { }
    _exit(0);
}

static int open_output(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail("open %s: %s", path, strerror(errno));
    return fd;
}

static unsigned long long proc_starttime(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0) return 0;
    buf[len] = '\0';
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    /* After the command: state is field 3; starttime is field 22. */
    for (int field = 2; field < 22 && p; field++) p = strchr(p + 1, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

static void write_status(int fd, int code, int sig, int timed_out, int stage, int err, const char *message) {
    if (fd < 0) return;
    char line[512];
    int n = snprintf(line, sizeof line, "R %d %d %d %s %d %s\n", code, sig, timed_out, stage_names[stage], err,
                     message && message[0] ? message : "-");
    if (n >= (int)sizeof line) n = (int)sizeof line - 1;
    if (write(fd, line, (size_t)n) < 0) { }
}

/* The end of a command: its result line in the exit file (then closed) and on the status fd, and the reason
 * it could not start where its stderr goes. Returns its exit code. */
static int report_result(const struct join_opts *o, const struct task_result *res, int timed_out, int exit_fd,
                         int status_fd) {
    int code, sig = 0;
    if (WIFSIGNALED(res->wstatus)) { sig = WTERMSIG(res->wstatus); code = 128 + sig; }
    else code = WEXITSTATUS(res->wstatus);
    /* The exit file first: if the caller is gone, writing to its status pipe raises SIGPIPE. */
    if (exit_fd >= 0) {
        write_status(exit_fd, code, sig, timed_out, res->err_stage, res->err_no, res->message);
        close(exit_fd);
    }
    signal(SIGPIPE, SIG_IGN);
    write_status(status_fd, code, sig, timed_out, res->err_stage, res->err_no, res->message);
    if (res->err_stage) {
        /* Like a shell's "command not found": the message goes where the task's stderr goes. */
        const char *what = res->err_stage == STAGE_EXEC ? o->argv[0] : res->err_stage == STAGE_CWD ? o->cwd
                         : res->err_stage == STAGE_USER ? o->user : "the machine's sandbox";
        dprintf(o->err_fd >= 0 ? o->err_fd : 2, "%s: %s %s: %s\n", g_prog, stage_names[res->err_stage], what,
                strerror(res->err_no));
    }
    return code;
}

static int cmd_join(int argc, char **argv) {
    /* A kill request may come at any time, even before the task exists: hold it until we can act on it. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGHUP);
    sigprocmask(SIG_BLOCK, &stop_signals, NULL);
    struct join_opts o;
    memset(&o, 0, sizeof o);
    o.in_fd = o.out_fd = o.err_fd = o.userns_fd = -1;
    const char *init = NULL, *in_path = NULL, *out_path = NULL, *err_path = NULL, *exit_path = NULL;
    const char **cgroups = xcalloc((size_t)argc, sizeof *cgroups);
    int exit_fd = -1, ncgroups = 0;
    double timeout = -1;
    int status_fd = -1, i;
    for (i = 0; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "--")) { i++; break; }
        if (i + 1 >= argc) fail("join: %s needs a value", opt);
        const char *v = argv[++i];
        if (!strcmp(opt, "--init")) init = v;
        else if (!strcmp(opt, "--cwd")) o.cwd = v;
        else if (!strcmp(opt, "--make-cwd")) o.make_cwd = atoi(v);
        else if (!strcmp(opt, "--user")) o.user = v;
        else if (!strcmp(opt, "--stdin")) in_path = v;
        else if (!strcmp(opt, "--stdout")) out_path = v;
        else if (!strcmp(opt, "--stderr")) err_path = v;
        else if (!strcmp(opt, "--timeout")) timeout = strtod(v, NULL);
        else if (!strcmp(opt, "--status-fd")) status_fd = atoi(v);
        else if (!strcmp(opt, "--exit-file")) exit_path = v;
        else if (!strcmp(opt, "--in-stdin")) o.in_path_inside = v;
        else if (!strcmp(opt, "--in-stdout")) o.out_path_inside = v;
        else if (!strcmp(opt, "--in-stderr")) o.err_path_inside = v;
        else if (!strcmp(opt, "--cgroup")) cgroups[ncgroups++] = v;
        else fail("join: unknown option %s", opt);
    }
    /* Nothing but stdio and the status pipe may leak from the caller into the machine. */
    if (status_fd > 3) syscall(SYS_close_range, 3u, (unsigned)status_fd - 1, 0u);
    syscall(SYS_close_range, status_fd >= 3 ? (unsigned)status_fd + 1 : 3u, ~0u, 0u);
    if (status_fd >= 0 && fcntl(status_fd, F_SETFD, FD_CLOEXEC) < 0)
        fail("status fd %d: %s", status_fd, strerror(errno));
    g_status_fd = status_fd;
    /* Files are host paths: open them before entering the machine's mount namespace. */
    if (in_path && (o.in_fd = open(in_path, O_RDONLY | O_CLOEXEC)) < 0)
        fail("open %s: %s", in_path, strerror(errno));
    if (out_path) o.out_fd = open_output(out_path);
    /* The exit status is also written here, so a caller that went away (a crashed server) can read it. */
    if (exit_path && (exit_fd = open(exit_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
        fail("open %s: %s", exit_path, strerror(errno));
    if (err_path) /* the same file for both (2>&1): one open file description, so the writes interleave */
        o.err_fd = out_path && !strcmp(out_path, err_path) ? fcntl(o.out_fd, F_DUPFD_CLOEXEC, 3)
                                                            : open_output(err_path);
    if (i >= argc) fail("join: no command given");
    o.argv = argv + i;
    if (!init) fail("join: --init is required");
    int pid = atoi(init);
    const char *colon = strchr(init, ':');
    unsigned long long want_start = colon ? strtoull(colon + 1, NULL, 10) : 0;

    /* Open all namespace files while /proc is still the host's, then check the pid still is the init we
     * mean (a recycled pid would have another start time). Only the namespaces that differ from ours are
     * entered: a machine without a user or network namespace of its own shares the host's. The user namespace
     * comes last, in the shim: entering it gives up the host's rights, which entering the others needs. */
    static const char *kinds[] = {"cgroup", "ipc", "uts", "net", "pid", "mnt", "user"};
    static const int flags[] = {CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWNET, CLONE_NEWPID,
                                CLONE_NEWNS, CLONE_NEWUSER};
    enum { NKINDS = sizeof kinds / sizeof *kinds };
    int nsfd[NKINDS];
    g_fail_stage = "machine";
    for (int k = 0; k < NKINDS; k++) {
        char path[64];
        struct stat theirs, ours;
        snprintf(path, sizeof path, "/proc/%d/ns/%s", pid, kinds[k]);
        nsfd[k] = open(path, O_RDONLY | O_CLOEXEC);
        if (nsfd[k] < 0) fail("machine init %d is gone: %s", pid, strerror(errno));
        snprintf(path, sizeof path, "/proc/self/ns/%s", kinds[k]);
        if (fstat(nsfd[k], &theirs) == 0 && stat(path, &ours) == 0 && theirs.st_ino == ours.st_ino &&
            theirs.st_dev == ours.st_dev && flags[k] != CLONE_NEWNS && flags[k] != CLONE_NEWPID) {
            close(nsfd[k]);
            nsfd[k] = -1;
        }
    }
    if (want_start && proc_starttime(pid) != want_start) fail("machine init %d is gone (pid reused)", pid);
    /* The machine's cgroups while we still see the host's /sys (the command and its children follow us). */
    join_cgroups(cgroups, ncgroups);
    for (int k = 0; k < NKINDS - 1; k++)
        if (nsfd[k] >= 0 && setns(nsfd[k], flags[k]) < 0) fail("setns %s: %s", kinds[k], strerror(errno));
    o.userns_fd = nsfd[NKINDS - 1];
    o.sandboxed = o.userns_fd >= 0;
    if (o.sandboxed) o.filter_len = build_filter();
    g_fail_stage = "helper";

    int sfd = signalfd(-1, &stop_signals, SFD_CLOEXEC);
    int result[2];
    if (sfd < 0 || pipe2(result, O_CLOEXEC) < 0) fail("signalfd/pipe: %s", strerror(errno));
    pid_t t = fork();
    if (t < 0) fail("fork: %s", strerror(errno));
    if (t == 0) {
        close(result[0]);
        close(sfd);
        if (status_fd >= 0) close(status_fd);
        g_status_fd = -1;
        for (int k = 0; k < NKINDS - 1; k++)
            if (nsfd[k] >= 0) close(nsfd[k]);
        shim(&o, result[1]);
    }
    close(result[1]);
    if (o.in_fd >= 0) close(o.in_fd);
    if (o.out_fd >= 0) close(o.out_fd);
    if (o.userns_fd >= 0) close(o.userns_fd);

    struct task_result res;
    size_t got = 0;
    int timed_out = 0, signalled = 0;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int wait_ms = -1;
        if (timeout >= 0 && !timed_out && !signalled) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            double left = timeout - (double)(now.tv_sec - start.tv_sec) - (double)(now.tv_nsec - start.tv_nsec) / 1e9;
            if (left <= 0) {
                timed_out = 1;
                kill(t, SIGTERM);
                continue;
            }
            wait_ms = (int)(left * 1000.0) + 1;
        }
        struct pollfd fds[2] = {{result[0], POLLIN, 0}, {sfd, POLLIN, 0}};
        int r = poll(fds, 2, wait_ms);
        if (r < 0 && errno == EINTR) continue;
        if (fds[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si && !signalled && !timed_out) {
                signalled = 1;
                kill(t, SIGTERM);
            }
        }
        if (fds[0].revents & (POLLIN | POLLHUP)) {
            ssize_t n = read(result[0], (char *)&res + got, sizeof res - got);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            got += (size_t)n;
            if (got == sizeof res) break;
        }
    }
    int tstatus = 0;
    while (waitpid(t, &tstatus, 0) < 0 && errno == EINTR) { }
    if (got != sizeof res || !res.have_status) {
        /* The shim itself died (the machine was destroyed under us): report how. */
        memset(&res, 0, sizeof res);
        res.have_status = 1;
        res.wstatus = WIFSIGNALED(tstatus) ? tstatus : (SIGKILL & 0x7f);
    }
    return report_result(&o, &res, timed_out, exit_fd, status_fd);
}

/* ----------------------------------------------------------------------------------------------- serve */

static int read_full(int fd, void *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        got += (size_t)n;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t len) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, (const char *)buf + done, len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        done += (size_t)n;
    }
    return 0;
}

static void put_le32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* The bytes of our own command line (argv[0] up to the end of the last argument): /proc/PID/cmdline shows
 * whatever they hold. */
static char *g_title = NULL;
static size_t g_title_len = 0;

/* Make this process's command line read `SELF init --id ID --root ROOT`, as a launched `init` would (the
 * rest of the area NUL). Returns -1 when it does not fit. */
static int set_init_title(const char *self, int argc, char **argv) {
    const char *id = "", *root = NULL;
    for (int i = 0; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--id")) id = argv[i + 1];
        else if (!strcmp(argv[i], "--root")) root = argv[i + 1];
    }
    if (!root || !g_title) return -1;
    const char *parts[] = {self, "init", "--id", id, "--root", root};
    size_t need = 0;
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) need += strlen(parts[i]) + 1;
    if (need > g_title_len) return -1;
    char *at = g_title;
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
        size_t n = strlen(parts[i]) + 1;
        memmove(at, parts[i], n);
        at += n;
    }
    memset(at, 0, g_title_len - need);
    return 0;
}

/* ---------------------------------------------------------------------------------------------- starter */

/* A machine started with --control is also its own starter: its init accepts the host's connections on that
 * socket and forks each command from inside, where the machine's namespaces, cgroups and bounding set are
 * already in place. A command then costs two forks and the command's exec, instead of the exec of `join`,
 * six setns calls and the cgroup moves (measured: the helper's exec alone, with the C library's start-up,
 * costs about as much as the command's own).
 *
 * A request is one SOCK_SEQPACKET message: the strings of `join`'s options, each ending in NUL, then `--`,
 * the command's argv and its environment (`--env N`: the last N strings), with file descriptors attached
 * (SCM_RIGHTS): the first is the command's status socket, the others are named by index (--exit-fd,
 * --stdin-fd, --stdout-fd, --stderr-fd: host files the server opened). The init only receives and forks; the
 * child parses (a bad request fails alone) and says "S" on the status socket first (the server reads the
 * child's host pid from the credentials the kernel attaches), then runs the command as join's shim does, and
 * ends with join's result line, in the exit file first. The server may write "K" on the status socket to
 * kill the command's tree; when the server is gone the command runs on, its result kept in the exit file. */
#define MAX_CONNECTIONS 32
#define REQUEST_MAX (256 * 1024)
#define REQUEST_FDS 5
static char g_request[REQUEST_MAX];
static struct pollfd g_starter_fds[2 + MAX_CONNECTIONS]; /* the signalfd, the listening socket, connections */
static int g_starter_nfds;

/* The command's title, so a restarted server finds it as it finds a `join` (and never takes it for the init
 * whose title it inherited): `SELF join --exit-file PATH`, or `SELF join` when PATH does not fit (SELF: the
 * first word of the inherited title, the helper's path). */
static void set_join_title(const char *exit_path) {
    if (!g_title) return;
    size_t self = strnlen(g_title, g_title_len) + 1;
    const char *parts[] = {"join", "--exit-file", exit_path ? exit_path : ""};
    size_t nparts = exit_path ? 3 : 1, need = self;
    for (size_t i = 0; i < nparts; i++) need += strlen(parts[i]) + 1;
    if (need > g_title_len) nparts = 1, need = self + 5;
    if (need > g_title_len) return;
    char *at = g_title + self;
    for (size_t i = 0; i < nparts; i++) {
        size_t n = strlen(parts[i]) + 1;
        memcpy(at, parts[i], n);
        at += n;
    }
    memset(at, 0, g_title_len - (size_t)(at - g_title));
}

static int request_fd(const char *v, const int *fds, int nfds) {
    int k = atoi(v);
    if (k < 1 || k >= nfds) fail("starter: file descriptor index %s out of range", v);
    return fds[k];
}

/* A command started by the init (forked from it: already in the machine). Never returns. */
static void __attribute__((noreturn)) starter_command(char *buf, size_t len, const int *fds, int nfds) {
    g_status_fd = fds[0];
    g_fail_stage = "helper";
    signal(SIGPIPE, SIG_IGN); /* the server may be gone: its socket says EPIPE (task_child resets this) */
    if (send(fds[0], "S", 1, MSG_NOSIGNAL) != 1) _exit(0); /* nobody to run it for */
    int argc = 0;
    for (size_t i = 0; i < len; i++) argc += buf[i] == '\0';
    char **args = xcalloc((size_t)argc + 1, sizeof *args);
    for (size_t i = 0, start = 0, k = 0; i < len; i++)
        if (buf[i] == '\0') { args[k++] = buf + start; start = i + 1; }
    struct join_opts o;
    memset(&o, 0, sizeof o);
    o.in_fd = o.out_fd = o.err_fd = o.userns_fd = -1;
    o.sandboxed = g_hardened;
    int exit_fd = -1, i;
    long nenv = 0;
    double timeout = -1;
    const char *exit_path = NULL;
    for (i = 0; i < argc; i++) {
        const char *opt = args[i];
        if (!strcmp(opt, "--")) { i++; break; }
        if (i + 1 >= argc) fail("starter: %s needs a value", opt);
        const char *v = args[++i];
        if (!strcmp(opt, "--cwd")) o.cwd = v;
        else if (!strcmp(opt, "--make-cwd")) o.make_cwd = atoi(v);
        else if (!strcmp(opt, "--user")) o.user = v;
        else if (!strcmp(opt, "--in-stdin")) o.in_path_inside = v;
        else if (!strcmp(opt, "--in-stdout")) o.out_path_inside = v;
        else if (!strcmp(opt, "--in-stderr")) o.err_path_inside = v;
        else if (!strcmp(opt, "--timeout")) timeout = strtod(v, NULL);
        else if (!strcmp(opt, "--exit-fd")) g_exit_fd = exit_fd = request_fd(v, fds, nfds);
        else if (!strcmp(opt, "--exit-path")) exit_path = v;
        else if (!strcmp(opt, "--stdin-fd")) o.in_fd = request_fd(v, fds, nfds);
        else if (!strcmp(opt, "--stdout-fd")) o.out_fd = request_fd(v, fds, nfds);
        else if (!strcmp(opt, "--stderr-fd")) o.err_fd = request_fd(v, fds, nfds);
        else if (!strcmp(opt, "--env")) nenv = strtol(v, NULL, 10);
        else fail("starter: unknown option %s", opt);
    }
    if (nenv < 0 || i + nenv >= argc) fail("starter: no command given");
    o.argv = args + i;
    char **env = xcalloc((size_t)nenv + 1, sizeof *env);
    memcpy(env, args + (argc - nenv), (size_t)nenv * sizeof *env);
    environ = env;
    args[argc - nenv] = NULL; /* the command's argv ends here */
    set_join_title(exit_path);
    if (o.sandboxed) {
        o.filter_len = build_filter();
        sound_mounts();
    }
    open_inside_files(&o);
    struct task_result res = {0, 0, 0, 0, ""};
    int sfd;
    pid_t task = start_task(&o, &res, &sfd);
    int watch = fds[0], timed_out = 0, killing = 0;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (!res.have_status && !killing) {
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0)
            if (p == task) { res.have_status = 1; res.wstatus = st; }
        if (res.have_status) break;
        int wait_ms = -1;
        if (timeout >= 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            double left = timeout - (double)(now.tv_sec - start.tv_sec) - (double)(now.tv_nsec - start.tv_nsec) / 1e9;
            if (left <= 0) { timed_out = killing = 1; break; }
            wait_ms = (int)(left * 1000.0) + 1;
        }
        struct pollfd pfds[2] = {{sfd, POLLIN, 0}, {watch, POLLIN, 0}};
        if (poll(pfds, watch >= 0 ? 2 : 1, wait_ms) < 0) continue;
        if (pfds[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si && si.ssi_signo == SIGTERM) killing = 1;
        }
        if (watch >= 0 && pfds[1].revents) {
            char c;
            ssize_t n = recv(watch, &c, 1, MSG_DONTWAIT);
            if (n == 1 && c == 'K') killing = 1;
            else if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) watch = -1; /* the server is gone */
        }
    }
    if (killing) kill_tree(task, &res);
    report_result(&o, &res, timed_out, exit_fd, fds[0]);
    _exit(0);
}

static void refuse_request(const int *fds, int nfds, const char *why) {
    char line[256];
    int n = snprintf(line, sizeof line, "R 125 0 0 helper 0 %s: %s\n", g_prog, why);
    if (nfds > 0 && send(fds[0], line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) { }
}

/* One request from a connection: 1 handled, -1 none waiting, 0 the connection ended. */
static int take_request(int conn) {
    struct iovec iov = {g_request, REQUEST_MAX - 1};
    union { struct cmsghdr head; char buf[CMSG_SPACE(REQUEST_FDS * sizeof(int))]; } cm;
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = cm.buf;
    m.msg_controllen = sizeof cm.buf;
    ssize_t n = recvmsg(conn, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : 0;
    if (n == 0) return 0;
    int fds[REQUEST_FDS], nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t j = 0; j < k; j++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + j * sizeof(int), sizeof fd);
            if (nfds < REQUEST_FDS) fds[nfds++] = fd;
            else close(fd);
        }
    }
    if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        refuse_request(fds, nfds, "the request is too large");
    } else if (nfds > 0) {
        g_request[n] = '\0';
        pid_t child = fork();
        if (child == 0) {
            for (int i = 0; i < g_starter_nfds; i++) close(g_starter_fds[i].fd);
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, NULL); /* (start_task blocks what it waits for) */
            starter_command(g_request, (size_t)n, fds, nfds);
        }
        if (child < 0) refuse_request(fds, nfds, "fork failed in the machine's init");
    }
    for (int i = 0; i < nfds; i++) close(fds[i]);
    return 1;
}

static void __attribute__((noreturn)) starter_loop(int control, const sigset_t *signals) {
    int sfd = signalfd(-1, signals, SFD_CLOEXEC);
    if (sfd < 0) _exit(125); /* cannot happen with a valid set; the machine then dies at once, visibly */
    g_starter_fds[0] = (struct pollfd){sfd, POLLIN, 0};
    g_starter_fds[1] = (struct pollfd){control, POLLIN, 0};
    g_starter_nfds = 2;
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0) { /* reap every exited orphan, and the commands' shims */ }
        if (poll(g_starter_fds, (nfds_t)g_starter_nfds, -1) < 0) continue;
        if (g_starter_fds[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si &&
                (si.ssi_signo == SIGTERM || si.ssi_signo == SIGPWR)) {
                kill(-1, SIGKILL); /* power off, as init_loop does */
                _exit(0);
            }
        }
        if (g_starter_fds[1].revents & POLLIN) {
            int conn = accept4(control, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (conn >= 0 && g_starter_nfds < 2 + MAX_CONNECTIONS)
                g_starter_fds[g_starter_nfds++] = (struct pollfd){conn, POLLIN, 0};
            else if (conn >= 0)
                close(conn);
        }
        for (int i = 2; i < g_starter_nfds; i++) {
            if (!g_starter_fds[i].revents) continue;
            int r;
            while ((r = take_request(g_starter_fds[i].fd)) == 1) { }
            if (r == 0 || !(g_starter_fds[i].revents & POLLIN)) {
                close(g_starter_fds[i].fd);
                g_starter_fds[i--] = g_starter_fds[--g_starter_nfds];
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------------ reserve */

/* A provisioner can keep a reserve of "shells": what a hardened machine's kernel setup costs most, made ahead
 * while the host is quiet. A shell is a user namespace with its id map, the network namespace it owns, and a
 * veth pair whose eth0 is in that namespace and whose host end is up but without an address or a route, and
 * the IPC and UTS namespaces the machine's root will have. The provisioner holds each shell by descriptors and
 * names them in its reply; a machine's init opens them as /proc/PID/fd/N (--shell) and the caller then has the
 * provisioner drop them. A shell is used once, by one
 * machine, and nothing runs in it before that machine's init: it is exactly what make_namespaces and
 * create_veth would have made for the machine. Shells held when the provisioner ends go with it. */
#define MAX_SHELL_FD 65536
static unsigned char g_shell_fd[MAX_SHELL_FD]; /* 1: a descriptor of a shell (the only ones `drop` closes) */

/* shell BASE:COUNT VETH -> "USER NET IPC UTS" (descriptors). A failure ends the provisioner (and the shells it
 * holds). */
static void make_shell(int argc, char **args, char *msg, size_t cap) {
    if (argc != 3) fail("shell: want BASE:COUNT VETH");
    char *end;
    long base = strtol(args[1], &end, 10), count = *end == ':' ? strtol(end + 1, &end, 10) : 0;
    if (*end || base <= 0 || count <= 0 || count > 1L << 24) fail("shell %s: want BASE:COUNT", args[1]);
    struct netspec n = {.veth = args[2]};
    if (strlen(n.veth) >= IFNAMSIZ || !n.veth[0]) fail("shell: bad interface name %s", n.veth);
    int userns_fd, netns_fd, ipc_uts[2];
    make_namespaces(base, count, 1, &userns_fd, &netns_fd, ipc_uts);
    create_veth(&n, netns_fd);
    /* What does not depend on the machine is done here too: the host's end up (still without a route, see
     * attach_veth); inside, IPv6 off on eth0, lo and eth0 up. */
    int fd = nl_open();
    link_up(fd, veth_index(n.veth), n.veth);
    close(fd);
    static int host_netns = -1;
    if (host_netns < 0 && (host_netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)) < 0)
        fail("shell: open /proc/self/ns/net: %s", strerror(errno));
    if (setns(netns_fd, CLONE_NEWNET) < 0) fail("shell: setns net: %s", strerror(errno));
    eth0_without_ipv6();
    fd = nl_open();
    link_up(fd, 1, "lo");
    int index = (int)if_nametoindex("eth0");
    if (!index) fail("shell: eth0: %s", strerror(errno));
    link_up(fd, index, "eth0");
    close(fd);
    if (setns(host_netns, CLONE_NEWNET) < 0) fail("shell: back to the host's network: %s", strerror(errno));
    int fds[SHELL_NS] = {userns_fd, netns_fd, ipc_uts[0], ipc_uts[1]};
    for (int i = 0; i < SHELL_NS; i++) {
        if (fds[i] >= MAX_SHELL_FD) fail("shell: too many descriptors");
        g_shell_fd[fds[i]] = 1;
    }
    snprintf(msg, cap, "%d %d %d %d\n", fds[0], fds[1], fds[2], fds[3]);
}

/* drop FD... : close shells' descriptors (a machine has its own references now, or the shell is given up). */
static void drop_shells(int argc, char **args) {
    for (int i = 1; i < argc; i++) {
        long fd = strtol(args[i], NULL, 10);
        if (fd > 2 && fd < MAX_SHELL_FD && g_shell_fd[fd]) {
            g_shell_fd[fd] = 0;
            close((int)fd);
        }
    }
}

static int cmd_serve(const char *self) {
    signal(SIGPIPE, SIG_IGN);
    /* The inits we build stay our children until we end: let the kernel reap those that die. */
    signal(SIGCHLD, SIG_IGN);
    /* unshare(CLONE_NEWPID) makes only our next child a new namespace's init, and cannot be repeated while
     * our children's namespace differs from ours: after each build we set it back to our own. */
    int own_pid_ns = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
    if (own_pid_ns < 0) fail("serve: open /proc/self/ns/pid: %s", strerror(errno));
    for (;;) {
        unsigned char head[4];
        if (read_full(0, head, 4) < 0) return 0; /* the caller is gone */
        uint32_t len = (uint32_t)head[0] | (uint32_t)head[1] << 8 | (uint32_t)head[2] << 16 | (uint32_t)head[3] << 24;
        if (len > (64u << 20)) fail("serve: request of %u bytes", len);
        char *req = malloc((size_t)len + 1);
        if (!req) fail("out of memory");
        if (read_full(0, req, len) < 0) return 0;
        req[len] = '\0';
        int argc = 0;
        for (uint32_t i = 0; i < len; i++) argc += req[i] == '\0';
        char **args = xcalloc((size_t)argc + 1, sizeof *args);
        for (uint32_t i = 0, start = 0, k = 0; i < len; i++)
            if (req[i] == '\0') { args[k++] = req + start; start = i + 1; }
        char msg[1024];
        int code = 1, ready[2];
        if (argc >= 1 && !strcmp(args[0], "shell")) {
            make_shell(argc, args, msg, sizeof msg);
            code = 0;
        } else if (argc >= 1 && !strcmp(args[0], "drop")) {
            drop_shells(argc, args);
            snprintf(msg, sizeof msg, "ok\n");
            code = 0;
        } else if (pipe2(ready, O_CLOEXEC) < 0) {
            snprintf(msg, sizeof msg, "%s: pipe: %s\n", g_prog, strerror(errno));
        } else if (unshare(CLONE_NEWPID) < 0) {
            snprintf(msg, sizeof msg, "%s: unshare(CLONE_NEWPID): %s\n", g_prog, strerror(errno));
            close(ready[0]);
            close(ready[1]);
        } else {
            pid_t pid = fork();
            if (pid == 0) {
                /* The machine's init, straight from here: no intermediate process, no exec. Like a launched
                 * `init`: a session of its own, and a command line reading `shoal-machine init --id ID
                 * --root ROOT` (a restarted server finds machines, and the strays of interrupted builds, by
                 * it). Errors go to the ready pipe. */
                close(ready[0]);
                g_errfd = ready[1];
                signal(SIGCHLD, SIG_DFL);
                signal(SIGPIPE, SIG_DFL);
                setsid();
                if (set_init_title(self, argc, args) < 0)
                    fail("serve: no room in the command line for the machine's (start with TITLE-SPACE)");
                struct init_spec sp;
                parse_init(argc, args, &sp);
                init_machine(&sp, ready[1]);
            }
            int saved = errno;
            if (setns(own_pid_ns, CLONE_NEWPID) < 0) fail("serve: setns(own pid namespace): %s", strerror(errno));
            close(ready[1]);
            if (pid < 0) {
                snprintf(msg, sizeof msg, "%s: fork: %s\n", g_prog, strerror(saved));
                close(ready[0]);
            } else if ((code = await_ready(pid, ready[0], msg, sizeof msg)) == 0) {
                snprintf(msg, sizeof msg, "%d\n", (int)pid);
            }
        }
        size_t used = strlen(msg);
        unsigned char reply[5];
        reply[0] = (unsigned char)code;
        put_le32(reply + 1, (uint32_t)used);
        if (write_full(1, reply, sizeof reply) < 0 || write_full(1, msg, used) < 0) return 0;
        free(args);
        free(req);
    }
}

/* netmount --pid INIT --type nfs|cifs --source SRC --target PATH, mount data on stdin: a network file system
 * (a pool's nfs/cifs mountConfiguration) mounted in a running machine by the host. A user-namespaced root
 * cannot mount nfs or cifs, so the host's root does it in the machine's mount namespace, from the machine's
 * network namespace (the client talks to the server from the node's address). The data (options, and a
 * CIFS password) comes on stdin, not argv, which other host users can read. The target is resolved from the
 * machine's root without following any link. */
static int cmd_netmount(int argc, char **argv) {
    long pid = 0;
    const char *type = NULL, *source = NULL, *target = NULL;
    for (int i = 0; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--pid")) pid = strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--type")) type = argv[i + 1];
        else if (!strcmp(argv[i], "--source")) source = argv[i + 1];
        else if (!strcmp(argv[i], "--target")) target = argv[i + 1];
        else fail("netmount: unknown option %s", argv[i]);
    }
    if (pid <= 1 || !type || !source || !target || target[0] != '/' ||
        (strcmp(type, "nfs") && strcmp(type, "nfs4") && strcmp(type, "cifs")))
        fail("netmount: --pid, --type nfs|nfs4|cifs, --source and an absolute --target are required");
    char data[4096];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof data - 1 && (n = read(0, data + got, sizeof data - 1 - got)) != 0) {
        if (n < 0 && errno != EINTR) fail("read the mount data: %s", strerror(errno));
        if (n > 0) got += (size_t)n;
    }
    data[got] = '\0';
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/ns/net", pid);
    int netfd = open(path, O_RDONLY | O_CLOEXEC);
    snprintf(path, sizeof path, "/proc/%ld/ns/mnt", pid);
    int mntfd = open(path, O_RDONLY | O_CLOEXEC);
    if (netfd < 0 || mntfd < 0) fail("the machine's namespaces (pid %ld): %s", pid, strerror(errno));
    if (setns(netfd, CLONE_NEWNET) < 0) fail("setns net: %s", strerror(errno));
    if (setns(mntfd, CLONE_NEWNS) < 0) fail("setns mnt: %s", strerror(errno));
    int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) fail("open the machine's root: %s", strerror(errno));
    char *copy = strdup(target);
    if (!copy) fail("out of memory");
    for (char *save = NULL, *part = strtok_r(copy, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
        if (!strcmp(part, "..")) fail("netmount: %s leaves the machine's root", target);
        int next = openat(fd, part, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0) fail("mount point %s: %s (a link or not a directory?)", target, strerror(errno));
        close(fd);
        fd = next;
    }
    free(copy);
    if (fchdir(fd) < 0) fail("chdir %s: %s", target, strerror(errno));
    if (mount(source, ".", type, MS_NOSUID | MS_NODEV, data) < 0)
        fail("mount -t %s %s on %s: %s", type, source, target, strerror(errno));
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s init|join|netmount|serve|version ...\n", g_prog);
        return 2;
    }
    if (!strcmp(argv[1], "init")) {
        /* The title area the init's commands rewrite (see set_join_title); the init's own stays as launched. */
        g_title = argv[0];
        g_title_len = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - argv[0]);
        return cmd_init(argc - 2, argv + 2);
    }
    if (!strcmp(argv[1], "join")) return cmd_join(argc - 2, argv + 2);
    if (!strcmp(argv[1], "netmount")) return cmd_netmount(argc - 2, argv + 2);
    if (!strcmp(argv[1], "serve")) {
        g_title = argv[0];
        g_title_len = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) + 1 - argv[0]);
        /* The blank room for the builds' titles reads as NULs here, so `ps` shows just `SELF serve`. */
        for (int i = 2; i < argc; i++) memset(argv[i], 0, strlen(argv[i]));
        return cmd_serve(argv[0]);
    }
    if (!strcmp(argv[1], "version")) {
        printf("shoal-machine %s\n", HELPER_VERSION);
        return 0;
    }
    fprintf(stderr, "%s: unknown command %s\n", g_prog, argv[1]);
    return 2;
}

/* The kernel's floor for a hardened node's isolation, without Shoal: what the isolation the issue requires costs
 * the kernel, apart from everything a server adds around it.
 *
 *   isolation_floor plain N     fork N children that wait (the node's init exists in every mode)
 *   isolation_floor isolated N  the same N children, each in a user namespace of its own (ids mapped by the
 *                               parent, as root maps a node's range) and a network namespace of its own: loopback
 *                               up, eth0 (a veth whose host end is up with a /32 route) with an address and a
 *                               default route, as a node's network is set up
 *   isolation_floor base N DIR  N minimal nodes as the limits baseline builds them: each child makes a mount and a
 *                               uts namespace, mounts an overlay of DIR/lower (the image) as its root with /proc
 *                               and a read-only /sys, and pivots into it
 *   isolation_floor required N DIR
 *                               the same nodes with everything the issue requires of a hardened node, done the
 *                               cheapest way the kernel allows: the isolated mode's namespaces and routed veth
 *                               (with the host end's proxy ARP and reverse-path filter), the image layer mounted
 *                               id-mapped, /proc and /sys masked and read-only where the issue says (mounted by
 *                               the host's root, so the node's root cannot undo them), then the node's root in
 *                               its user namespace with mount, uts and IPC namespaces of its own and a cut
 *                               capability bounding set
 *
 * A user namespace is made by a process that joins it, and the host's root needs it (for the id-mapped layer)
 * before the node's own mount namespace can be made inside it: so in required mode each node's child forks a
 * short-lived one that makes it, as any runtime with id-mapped layers must.
 *
 * The children stay until all N are made (nothing is torn down while it measures) and stdin ends, then the
 * program ends them. It prints N, then the children's pids on one line.
 * bench_isolation_floor.py runs the modes and prints the differences per node in host-wide busy CPU. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sched.h>
#include <stdint.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "isolation_floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

struct req {
    struct nlmsghdr h;
    char body[1024];
};

static void put(struct req *r, unsigned short type, const void *data, size_t len) {
    struct rtattr *a = (struct rtattr *)((char *)r + NLMSG_ALIGN(r->h.nlmsg_len));
    a->rta_type = type;
    a->rta_len = (unsigned short)RTA_LENGTH(len);
    if (len) memcpy(RTA_DATA(a), data, len);
    r->h.nlmsg_len = NLMSG_ALIGN(r->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
}

static struct rtattr *nest(struct req *r, unsigned short type) {
    struct rtattr *a = (struct rtattr *)((char *)r + NLMSG_ALIGN(r->h.nlmsg_len));
    put(r, type, NULL, 0);
    return a;
}

static void end(struct req *r, struct rtattr *a) { a->rta_len = (unsigned short)((char *)r + r->h.nlmsg_len - (char *)a); }

static void start(struct req *r, unsigned short type, unsigned short flags, const void *head, size_t len) {
    memset(r, 0, sizeof *r);
    r->h.nlmsg_len = (unsigned)NLMSG_LENGTH(len);
    r->h.nlmsg_type = type;
    r->h.nlmsg_flags = (unsigned short)(NLM_F_REQUEST | NLM_F_ACK | flags);
    memcpy(NLMSG_DATA(&r->h), head, len);
}

static void talk(int fd, struct req *r, const char *what) {
    if (send(fd, r, r->h.nlmsg_len, 0) < 0) die(what);
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0) die(what);
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    if (h->nlmsg_type == NLMSG_ERROR && ((struct nlmsgerr *)NLMSG_DATA(h))->error) {
        errno = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
        die(what);
    }
}

static void up(int fd, int index) {
    struct req r;
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC, .ifi_index = index, .ifi_flags = IFF_UP, .ifi_change = IFF_UP};
    start(&r, RTM_NEWLINK, 0, &ifi, sizeof ifi);
    talk(fd, &r, "link up");
}

static void route(int fd, in_addr_t dst, int len, const in_addr_t *via, int index) {
    struct req r;
    struct rtmsg rt = {.rtm_family = AF_INET, .rtm_dst_len = (unsigned char)len, .rtm_table = RT_TABLE_MAIN,
                       .rtm_protocol = RTPROT_BOOT, .rtm_scope = via ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK,
                       .rtm_type = RTN_UNICAST, .rtm_flags = via ? RTNH_F_ONLINK : 0};
    start(&r, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &rt, sizeof rt);
    if (len) put(&r, RTA_DST, &dst, sizeof dst);
    if (via) put(&r, RTA_GATEWAY, via, sizeof *via);
    put(&r, RTA_OIF, &index, sizeof index);
    talk(fd, &r, "route");
}

static int nl(void) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) die("netlink");
    return fd;
}

/* Inside the namespaces, as their root: lo and eth0 up, the address, the default route. */
static void inside(in_addr_t address, in_addr_t gateway) {
    int fd = nl();
    up(fd, 1);
    int index = (int)if_nametoindex("eth0");
    if (!index) die("eth0");
    struct req r;
    struct ifaddrmsg ifa = {.ifa_family = AF_INET, .ifa_prefixlen = 16, .ifa_index = (unsigned)index};
    start(&r, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &ifa, sizeof ifa);
    put(&r, IFA_LOCAL, &address, sizeof address);
    put(&r, IFA_ADDRESS, &address, sizeof address);
    talk(fd, &r, "address");
    up(fd, index);
    route(fd, 0, 0, &gateway, index);
    close(fd);
}

/* The host's end: a veth pair whose peer is eth0 in the namespace of `pid`, up, with a /32 route. */
static void plug(int fd, int i, int netns, in_addr_t address) {
    char name[IFNAMSIZ];
    snprintf(name, sizeof name, "flr%d", i);
    struct req r;
    struct ifinfomsg ifi = {.ifi_family = AF_UNSPEC, .ifi_flags = IFF_UP, .ifi_change = IFF_UP};
    start(&r, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifi, sizeof ifi);
    put(&r, IFLA_IFNAME, name, strlen(name) + 1);
    unsigned one = 1;
    put(&r, IFLA_NUM_TX_QUEUES, &one, sizeof one);
    put(&r, IFLA_NUM_RX_QUEUES, &one, sizeof one);
    struct rtattr *info = nest(&r, IFLA_LINKINFO);
    put(&r, IFLA_INFO_KIND, "veth", 5);
    struct rtattr *data = nest(&r, IFLA_INFO_DATA);
    struct ifinfomsg peer_head = {.ifi_family = AF_UNSPEC};
    struct rtattr *peer = (struct rtattr *)((char *)&r + NLMSG_ALIGN(r.h.nlmsg_len));
    put(&r, VETH_INFO_PEER, &peer_head, sizeof peer_head);
    put(&r, IFLA_IFNAME, "eth0", 5);
    put(&r, IFLA_NUM_TX_QUEUES, &one, sizeof one);
    put(&r, IFLA_NUM_RX_QUEUES, &one, sizeof one);
    put(&r, IFLA_NET_NS_FD, &netns, sizeof netns);
    end(&r, peer);
    end(&r, data);
    end(&r, info);
    talk(fd, &r, "veth");
    route(fd, address, 32, NULL, (int)if_nametoindex(name));
}

/* Node i's ids: root and the next 65,535 ids of its user namespace are the host's range of node i. */
static void map_ids(pid_t pid, int i) {
    char path[64], map[64];
    snprintf(map, sizeof map, "0 %d 65536\n", 1000000 + i * 65536);
    const char *files[] = {"uid_map", "gid_map"};
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, files[k]);
        int m = open(path, O_WRONLY | O_CLOEXEC);
        if (m < 0 || write(m, map, strlen(map)) < 0) die(path);
        close(m);
    }
}

static void sysctl(const char *name, const char *key) {
    char path[128];
    snprintf(path, sizeof path, "/proc/sys/net/ipv4/conf/%s/%s", name, key);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "1", 1) != 1) die(path);
    close(fd);
}

/* ------------------------------------------------------------------------------------ base and required */

#define OPEN_TREE_CLONE_ 1u
#define AT_EMPTY_PATH_ 0x1000
#define MOUNT_ATTR_IDMAP_ 0x00100000ull
#define MOUNT_ATTR_RDONLY_ 0x1u
struct mount_attr_ { uint64_t attr_set, attr_clr, propagation, userns_fd; };

static void mnt(const char *src, const char *dst, const char *type, unsigned long flags, const char *data) {
    if (mount(src, dst, type, flags, data) < 0) die(dst);
}

static char *at(const char *root, const char *path) {
    static char buf[8][512];
    static int k;
    char *b = buf[k++ % 8];
    snprintf(b, sizeof buf[0], "%s%s", root, path);
    return b;
}

static void fscfg(int fsfd, unsigned cmd, const char *key, const char *value, int aux) {
    if (syscall(SYS_fsconfig, fsfd, cmd, key, value, aux) < 0) die(key ? key : "fsconfig create");
}

/* The node's root: an overlay of the image layer (id-mapped into the node's user namespace if userns >= 0). */
static void root_overlay(const char *dir, int i, const char *root, int userns) {
    char upper[512], work[512], opts[2048];
    snprintf(upper, sizeof upper, "%s/%d/upper", dir, i);
    snprintf(work, sizeof work, "%s/%d/work", dir, i);
    if (userns < 0) {
        snprintf(opts, sizeof opts, "lowerdir=%s/lower,upperdir=%s,workdir=%s", dir, upper, work);
        mnt("overlay", root, "overlay", 0, opts);
        return;
    }
    char lower[512];
    snprintf(lower, sizeof lower, "%s/lower", dir);
    int tree = (int)syscall(SYS_open_tree, AT_FDCWD, lower, OPEN_TREE_CLONE_ | O_CLOEXEC);
    struct mount_attr_ attr = {MOUNT_ATTR_IDMAP_, 0, 0, (uint64_t)userns};
    if (tree < 0 || syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH_, &attr, sizeof attr) < 0) die("id map");
    int fsfd = (int)syscall(SYS_fsopen, "overlay", 1u /* FSOPEN_CLOEXEC */);
    if (fsfd < 0) die("fsopen");
    fscfg(fsfd, 5 /* FSCONFIG_SET_FD */, "lowerdir+", NULL, tree);
    fscfg(fsfd, 1 /* FSCONFIG_SET_STRING */, "upperdir", upper, 0);
    fscfg(fsfd, 1, "workdir", work, 0);
    fscfg(fsfd, 6 /* FSCONFIG_CMD_CREATE */, NULL, NULL, 0);
    int m = (int)syscall(SYS_fsmount, fsfd, 1u /* FSMOUNT_CLOEXEC */, 0);
    if (m < 0 || syscall(SYS_move_mount, m, "", AT_FDCWD, root, 4u /* MOVE_MOUNT_F_EMPTY_PATH */) < 0)
        die("overlay");
    close(fsfd), close(m); /* the detached clone `tree` is held until the node ends, as a runtime defers it */
}

/* What the issue masks and makes read-only, as a container runtime does. */
static void mask(const char *root) {
    const char *files[] = {"/proc/kcore", "/proc/keys", "/proc/sysrq-trigger"};
    struct stat st;
    for (int k = 0; k < 3; k++)
        if (stat(at(root, files[k]), &st) == 0) mnt("/dev/null", at(root, files[k]), NULL, MS_BIND, NULL);
    if (stat(at(root, "/sys/firmware"), &st) == 0)
        mnt("tmpfs", at(root, "/sys/firmware"), "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0");
    const char *ro[] = {"/proc/sys", "/proc/irq", "/proc/bus"};
    for (int k = 0; k < 3; k++) {
        if (stat(at(root, ro[k]), &st) < 0) continue;
        mnt(at(root, ro[k]), at(root, ro[k]), NULL, MS_BIND | MS_REC, NULL);
        mnt(NULL, at(root, ro[k]), NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    }
}

/* A node's build in its own child, as host root; returns when the node's root is in place. */
static void build(const char *dir, int i, int required, in_addr_t address, in_addr_t gateway) {
    char root[512], name[32];
    snprintf(root, sizeof root, "%s/%d/root", dir, i);
    snprintf(name, sizeof name, "node%d", i);
    int userns = -1, netns = -1;
    if (required) {
        /* The short-lived process that makes the user and network namespaces; the node maps its ids. */
        int up[2], down[2];
        if (pipe2(up, O_CLOEXEC) < 0 || pipe2(down, O_CLOEXEC) < 0) die("pipe");
        pid_t maker = fork();
        if (maker < 0) die("fork");
        char b = 0;
        if (maker == 0) {
            close(down[1]); /* its end of file is the word to go */
            if (unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0 || write(up[1], "u", 1) != 1) _exit(1);
            while (read(down[0], &b, 1) < 0) { }
            _exit(0);
        }
        if (read(up[0], &b, 1) != 1) die("maker");
        map_ids(maker, i);
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/ns/user", maker);
        userns = open(path, O_RDONLY | O_CLOEXEC);
        snprintf(path, sizeof path, "/proc/%d/ns/net", maker);
        netns = open(path, O_RDONLY | O_CLOEXEC);
        if (userns < 0 || netns < 0) die(path);
        close(down[1]);
        waitpid(maker, NULL, 0);
        close(up[0]), close(up[1]), close(down[0]);
        /* The host's end, in the host's network namespace. */
        int fd = nl();
        plug(fd, i, netns, address);
        char host_end[IFNAMSIZ];
        snprintf(host_end, sizeof host_end, "flr%d", i);
        sysctl(host_end, "proxy_arp");
        sysctl(host_end, "rp_filter");
        close(fd);
        /* What the node writes to its disk belongs to its range. */
        char upper[512], work[512];
        snprintf(upper, sizeof upper, "%s/%d/upper", dir, i);
        snprintf(work, sizeof work, "%s/%d/work", dir, i);
        if (chown(upper, 1000000 + (unsigned)i * 65536, 1000000 + (unsigned)i * 65536) < 0 ||
            chown(work, 1000000 + (unsigned)i * 65536, 1000000 + (unsigned)i * 65536) < 0)
            die("chown");
    }
    if (unshare(CLONE_NEWNS | (required ? 0 : CLONE_NEWUTS)) < 0) die("unshare mount");
    mnt(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
    if (required && setns(netns, CLONE_NEWNET) < 0) die("setns net"); /* sysfs shows the node's network */
    root_overlay(dir, i, root, userns);
    mkdir(at(root, "/proc"), 0755);
    mkdir(at(root, "/sys"), 0755);
    mnt("proc", at(root, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mnt("sysfs", at(root, "/sys"), "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    if (required) mask(root);
    if (chdir(root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
        die("pivot_root");
    if (required) {
        /* Host root's mount namespace stays referenced (released after the node is up, as a runtime defers
         * it); the node's root gets namespaces of its own in its user namespace. */
        if (open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC) < 0) die("mnt ns");
        if (setns(userns, CLONE_NEWUSER) < 0 || setgroups(0, NULL) < 0 || setresgid(0, 0, 0) < 0 ||
            setresuid(0, 0, 0) < 0)
            die("enter the user namespace");
        if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC) < 0) die("unshare in the user namespace");
    }
    if (sethostname(name, strlen(name)) < 0) die("sethostname");
    if (required) {
        inside(address, gateway);
        const int keep[] = {0, 1, 3, 4, 5, 6, 7, 8, 10, 12, 13, 18, 21, 27, 29, 31};
        for (int cap = 0; cap < 41; cap++) {
            int kept = 0;
            for (size_t k = 0; k < sizeof keep / sizeof *keep; k++) kept |= keep[k] == cap;
            if (!kept && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) die("capability");
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: isolation_floor plain|isolated N | base|required N DIR\n");
        return 2;
    }
    int isolated = !strcmp(argv[1], "isolated"), n = atoi(argv[2]);
    int built = !strcmp(argv[1], "base") || !strcmp(argv[1], "required"), required = !strcmp(argv[1], "required");
    if (built && argc != 4) {
        fprintf(stderr, "isolation_floor: %s needs DIR (with DIR/lower, and DIR/I/{upper,work,root})\n", argv[1]);
        return 2;
    }
    pid_t *kids = calloc((size_t)n, sizeof *kids);
    int fd = nl();
    /* 10.59.0.0/16: outside the spaces test servers (10.64.0.0 on) and the other benchmarks (10.52.0.0/14) use. */
    in_addr_t gateway = inet_addr("10.59.0.1");
    for (int i = 0; i < n; i++) {
        int go[2], ready[2];
        if (pipe2(go, O_CLOEXEC) < 0 || pipe2(ready, O_CLOEXEC) < 0) die("pipe");
        in_addr_t address = htonl(ntohl(inet_addr("10.59.1.0")) + (unsigned)i);
        pid_t pid = fork();
        if (pid < 0) die("fork");
        char b = 0;
        if (pid == 0) {
            close(ready[0]), close(go[1]);
            if (built) build(argv[3], i, required, address, gateway);
            if (isolated && unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0) die("unshare");
            if (write(ready[1], "r", 1) != 1 || read(go[0], &b, 1) != 1) _exit(1);
            if (isolated) inside(address, gateway);
            if (write(ready[1], "r", 1) != 1) _exit(1);
            pause();
            _exit(0);
        }
        close(ready[1]), close(go[0]); /* a child that dies says so: end of file */
        if (read(ready[0], &b, 1) != 1) die("child");
        if (isolated) {
            map_ids(pid, i);
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/ns/net", pid);
            int netns = open(path, O_RDONLY | O_CLOEXEC);
            if (netns < 0) die(path);
            plug(fd, i, netns, address);
            close(netns);
        }
        if (write(go[1], "g", 1) != 1 || read(ready[0], &b, 1) != 1) die("child");
        close(go[1]), close(ready[0]);
        kids[i] = pid;
    }
    printf("%d\n", n);
    for (int i = 0; i < n; i++) printf("%s%d", i ? " " : "", (int)kids[i]);
    printf("\n");
    fflush(stdout);
    /* The nodes stay until stdin ends (at once from /dev/null): a test looks at them meanwhile. */
    char sink[64];
    while (read(0, sink, sizeof sink) > 0) { }
    for (int i = 0; i < n; i++) kill(kids[i], SIGKILL);
    for (int i = 0; i < n; i++) waitpid(kids[i], NULL, 0);
    return 0;
}

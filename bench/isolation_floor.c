/* The kernel's floor for a hardened node's isolation, without Shoal: what a user namespace with an id map and a
 * network namespace joined by a routed veth pair cost, and nothing else (no mounts, no cgroups, no files).
 *
 *   isolation_floor plain N    fork N children that wait (the node's init exists in every mode)
 *   isolation_floor isolated N the same N children, each in a user namespace of its own (ids mapped by the
 *                              parent, as root maps a node's range) and a network namespace of its own: loopback
 *                              up, eth0 (a veth whose host end is up with a /32 route) with an address and a
 *                              default route, as a node's network is set up
 *
 * The children stay until all N are made (nothing is torn down while it measures), then the program ends them.
 * bench_isolation_floor.py runs both and prints the difference per node in host-wide busy CPU. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <sched.h>
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

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: isolation_floor plain|isolated N\n");
        return 2;
    }
    int isolated = !strcmp(argv[1], "isolated"), n = atoi(argv[2]);
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
            if (isolated && unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0) die("unshare");
            if (write(ready[1], "r", 1) != 1 || read(go[0], &b, 1) != 1) _exit(1);
            if (isolated) inside(address, gateway);
            if (write(ready[1], "r", 1) != 1) _exit(1);
            pause();
            _exit(0);
        }
        if (read(ready[0], &b, 1) != 1) die("child");
        if (isolated) {
            char path[64], map[64];
            snprintf(map, sizeof map, "0 %d 65536\n", 1000000 + i * 65536);
            const char *files[] = {"uid_map", "gid_map"};
            for (int k = 0; k < 2; k++) {
                snprintf(path, sizeof path, "/proc/%d/%s", pid, files[k]);
                int m = open(path, O_WRONLY | O_CLOEXEC);
                if (m < 0 || write(m, map, strlen(map)) < 0) die(path);
                close(m);
            }
            snprintf(path, sizeof path, "/proc/%d/ns/net", pid);
            int netns = open(path, O_RDONLY | O_CLOEXEC);
            if (netns < 0) die(path);
            plug(fd, i, netns, address);
            close(netns);
        }
        if (write(go[1], "g", 1) != 1 || read(ready[0], &b, 1) != 1) die("child");
        close(go[0]), close(go[1]), close(ready[0]), close(ready[1]);
        kids[i] = pid;
    }
    printf("%d\n", n);
    fflush(stdout);
    for (int i = 0; i < n; i++) kill(kids[i], SIGKILL);
    for (int i = 0; i < n; i++) waitpid(kids[i], NULL, 0);
    return 0;
}

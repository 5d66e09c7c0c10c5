/*
 * The seccomp profile of every command that runs in a hardened machine (tasks, start tasks, run-commands,
 * and the machine's own init). Included by shoal_machine.c; this is the one place it is written.
 *
 * Shape: modelled on a container runtime's default profile (Docker/moby's `default.json`), written as a
 * deny list instead of an allow list because the machine's user namespace already confines the rest: every
 * system call not named here is allowed, and the kernel checks it against the capabilities the process holds
 * in the machine's own user namespace (mount, unshare, setns, chroot, network setup... work inside the node,
 * on the node's own namespaces, and nowhere else). A denied call fails with EPERM, as a container runtime's
 * does, so programs that probe for a feature fall back instead of crashing.
 *
 * System calls of another ABI (i386 `int 0x80`, x32 on x86_64) are denied as a whole: the numbers below are
 * those of the native ABI only, so a foreign ABI would be a way around the list.
 *
 * Each entry says why. Entries whose system call does not exist on the build architecture are skipped.
 */
#ifndef SHOAL_SECCOMP_PROFILE_H
#define SHOAL_SECCOMP_PROFILE_H

#include <sys/syscall.h>

struct denied_syscall {
    long nr;
    const char *name;
    const char *why;
};

#define DENY(name, why) {__NR_##name, #name, why}

static const struct denied_syscall SECCOMP_DENIED[] = {
/* Reading and writing host files behind the mount namespace's back. */
#ifdef __NR_open_by_handle_at
    DENY(open_by_handle_at, "opens any inode of a mounted file system by handle, bypassing the node's root "
                            "(the classic container breakout)"),
#endif
#ifdef __NR_name_to_handle_at
    DENY(name_to_handle_at, "produces the handles open_by_handle_at consumes; no use inside a node"),
#endif
/* The host kernel itself. */
#ifdef __NR_kexec_load
    DENY(kexec_load, "loads a new kernel for the host"),
#endif
#ifdef __NR_kexec_file_load
    DENY(kexec_file_load, "loads a new kernel for the host"),
#endif
#ifdef __NR_init_module
    DENY(init_module, "loads a module into the host kernel"),
#endif
#ifdef __NR_finit_module
    DENY(finit_module, "loads a module into the host kernel"),
#endif
#ifdef __NR_delete_module
    DENY(delete_module, "unloads a module from the host kernel"),
#endif
#ifdef __NR_create_module
    DENY(create_module, "obsolete module call"),
#endif
#ifdef __NR_reboot
    DENY(reboot, "reboots or halts (in a pid namespace it only ends the node's init; nodes restart through "
                 "the API instead)"),
#endif
#ifdef __NR_swapon
    DENY(swapon, "changes the host's swap"),
#endif
#ifdef __NR_swapoff
    DENY(swapoff, "changes the host's swap"),
#endif
#ifdef __NR_syslog
    DENY(syslog, "reads or clears the host kernel's log"),
#endif
#ifdef __NR_acct
    DENY(acct, "switches host-wide process accounting"),
#endif
#ifdef __NR_settimeofday
    DENY(settimeofday, "sets the host's clock (the clock is not namespaced)"),
#endif
#ifdef __NR_clock_settime
    DENY(clock_settime, "sets the host's clock"),
#endif
#ifdef __NR_clock_adjtime
    DENY(clock_adjtime, "adjusts the host's clock"),
#endif
#ifdef __NR_adjtimex
    DENY(adjtimex, "adjusts the host's clock"),
#endif
#ifdef __NR_stime
    DENY(stime, "sets the host's clock"),
#endif
#ifdef __NR_iopl
    DENY(iopl, "raw I/O port access"),
#endif
#ifdef __NR_ioperm
    DENY(ioperm, "raw I/O port access"),
#endif
#ifdef __NR_quotactl
    DENY(quotactl, "host file system quotas"),
#endif
#ifdef __NR_lookup_dcookie
    DENY(lookup_dcookie, "kernel profiling interface"),
#endif
#ifdef __NR_nfsservctl
    DENY(nfsservctl, "obsolete kernel NFS server control"),
#endif
#ifdef __NR_uselib
    DENY(uselib, "obsolete"),
#endif
#ifdef __NR_vhangup
    DENY(vhangup, "hangs up the controlling terminal of other sessions"),
#endif
/* Large kernel attack surface that a node's work does not need. */
#ifdef __NR_bpf
    DENY(bpf, "eBPF programs run in the host kernel"),
#endif
#ifdef __NR_perf_event_open
    DENY(perf_event_open, "host-wide performance counters and a long history of kernel bugs"),
#endif
#ifdef __NR_userfaultfd
    DENY(userfaultfd, "stalls kernel page faults at will, the usual way to win kernel races"),
#endif
#ifdef __NR_keyctl
    DENY(keyctl, "the kernel keyring is not namespaced: keys of other nodes and the host"),
#endif
#ifdef __NR_add_key
    DENY(add_key, "the kernel keyring is not namespaced"),
#endif
#ifdef __NR_request_key
    DENY(request_key, "the kernel keyring is not namespaced"),
#endif
#ifdef __NR_io_uring_setup
    DENY(io_uring_setup, "io_uring bypasses seccomp for the calls it performs; container runtimes deny it"),
#endif
#ifdef __NR_io_uring_enter
    DENY(io_uring_enter, "see io_uring_setup"),
#endif
#ifdef __NR_io_uring_register
    DENY(io_uring_register, "see io_uring_setup"),
#endif
#ifdef __NR_fanotify_init
    DENY(fanotify_init, "watches the whole host file system"),
#endif
#ifdef __NR_kcmp
    DENY(kcmp, "compares kernel objects of other processes (an address-space oracle)"),
#endif
#ifdef __NR_mbind
    DENY(mbind, "NUMA placement of host memory; a container runtime requires CAP_SYS_NICE"),
#endif
#ifdef __NR_set_mempolicy
    DENY(set_mempolicy, "NUMA placement of host memory"),
#endif
#ifdef __NR_move_pages
    DENY(move_pages, "NUMA placement of host memory"),
#endif
#ifdef __NR_migrate_pages
    DENY(migrate_pages, "NUMA placement of host memory"),
#endif
/* Allowed on purpose (named so that a reader does not wonder):
 *   mount, umount2, pivot_root, unshare, setns, clone with namespace flags, open_tree, move_mount, fsopen...:
 *     the kernel confines them to namespaces owned by the node's user namespace, as a VM's root may mount and
 *     make containers inside its VM;
 *   ptrace, process_vm_readv/writev: the kernel allows them only on processes of the same node (others are
 *     outside its pid namespace, or belong to another user namespace without CAP_SYS_PTRACE there);
 *   chown, setuid, setgid, mknod: confined to the node's id range and to devices its capabilities allow. */
};

#undef DENY

#endif

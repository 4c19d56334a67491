/*
 * LD_PRELOAD shim for Debian's user-mode-linux 6.1 (test harness only, never
 * part of the daemon). test/uml/boot.sh builds it and preloads it into
 * linux.uml.
 *
 * Why: UML 6.1 saves a guest thread's FPU state with PTRACE_GETREGSET
 * NT_X86_XSTATE into a buffer of its own fixed size (the AVX-era xsave
 * layout) and restores it with PTRACE_SETREGSET of that size. The host kernel
 * accepts a SETREGSET only when it covers the host's whole xsave area
 * (fpu_user_cfg.max_size), so on a host with AVX-512 or AMX every restore fails
 * with EFAULT and the guest panics at its first process ("ptrace set fp regs
 * failed, errno = 14"). Later UML releases size the buffer from the host.
 *
 * What it does: UML's save area for a guest thread stays where UML put it
 * (one buffer per thread), so the shim keeps beside each such buffer the whole
 * area the host gave for it. A GETREGSET NT_X86_XSTATE reads the whole area
 * into that copy and hands UML the first bytes it asked for; a SETREGSET
 * shorter than the host's area lays UML's bytes (which UML may have changed,
 * e.g. for a signal frame) over the copy and writes the whole area. So every
 * guest thread gets back exactly the state it had, AVX-512 included. Every
 * other ptrace call goes straight to libc; on a host whose area is no larger
 * than UML's buffer UML sees exactly what it would without the shim.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifndef NT_X86_XSTATE
#define NT_X86_XSTATE 0x202
#endif

/* Larger than any x86 xsave area so far (10,688 bytes with AMX). */
#define XSTATE_MAX 16384
/* Guest threads alive at once stay far below this (each node process has
 * about a dozen); past it a thread's extra components are not kept, as in the
 * plain widening below. */
#define SLOTS 8192

typedef long (*ptrace_fn)(enum __ptrace_request, pid_t, void *, void *);

struct slot {
	void *key;		/* UML's save-area address */
	unsigned char *area;	/* the host's whole area for it */
};

/* UML's host side makes its ptrace calls one at a time (a uniprocessor
 * kernel); its kernel stacks are too small for an area, hence static and mmap. */
static struct slot slots[SLOTS];
static unsigned char scratch[XSTATE_MAX];
static size_t host_size;	/* learnt from the first whole read */

static unsigned char *area_for(void *key, int create)
{
	size_t i = ((unsigned long)key >> 4) % SLOTS;

	for (size_t n = 0; n < SLOTS; n++, i = (i + 1) % SLOTS) {
		if (slots[i].key == key)
			return slots[i].area;
		if (!slots[i].key) {
			void *m;

			if (!create)
				return NULL;
			m = mmap(NULL, XSTATE_MAX, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (m == MAP_FAILED)
				return NULL;
			slots[i].key = key;
			slots[i].area = m;
			return m;
		}
	}
	return NULL;
}

long ptrace(enum __ptrace_request request, ...)
{
	static ptrace_fn real;
	va_list ap;
	pid_t pid;
	void *addr, *data;
	struct iovec *theirs;

	va_start(ap, request);
	pid = va_arg(ap, pid_t);
	addr = va_arg(ap, void *);
	data = va_arg(ap, void *);
	va_end(ap);
	if (!real)
		real = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
	theirs = data;
	if ((unsigned long)addr != NT_X86_XSTATE || !theirs || !theirs->iov_base)
		return real(request, pid, addr, data);

	if (request == PTRACE_GETREGSET) {
		unsigned char *area = area_for(theirs->iov_base, 1);
		struct iovec whole = { area ? area : scratch, XSTATE_MAX };
		long r = real(PTRACE_GETREGSET, pid, addr, &whole);

		if (r != 0)
			return r;
		host_size = whole.iov_len;
		if (theirs->iov_len > whole.iov_len)
			theirs->iov_len = whole.iov_len;
		memcpy(theirs->iov_base, whole.iov_base, theirs->iov_len);
		return 0;
	}
	if (request == PTRACE_SETREGSET && host_size > theirs->iov_len) {
		unsigned char *area = area_for(theirs->iov_base, 0);
		struct iovec whole = { area ? area : scratch, host_size };

		/* Never read for this buffer: start from the thread's current state. */
		if (!area && real(PTRACE_GETREGSET, pid, addr, &whole) != 0)
			return real(request, pid, addr, data);
		memcpy(whole.iov_base, theirs->iov_base, theirs->iov_len);
		return real(PTRACE_SETREGSET, pid, addr, &whole);
	}
	return real(request, pid, addr, data);
}

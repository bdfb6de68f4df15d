/* SPDX-License-Identifier: GPL-2.0 */
/*
 * lu-vmm's x86_64 guest: the same program as guest-arm64.s, in long mode.
 * lu-vmm copies it to the start of guest RAM (guest physical 0), maps the
 * first 4 GiB 1:1 with 2 MiB pages, and starts the vCPU here in 64-bit mode
 * with interrupts off.  Position independent; AT&T syntax.
 *
 * The status block is guest-arm64.s's; here the VMM also writes PERIOD (the
 * local APIC timer's count for 10 ms) and CNTFRQ (the TSC's frequency), which
 * the guest cannot find out by itself.
 *
 * 1. Load a GDT and an IDT (vector 0x20: the timer; any other: fatal).
 * 2. Fill the region with liveupdate::memfd::pattern(SEED, offset); keep its
 *    checksum (rotate left by one, xor each word) as EXPECTED.
 * 3. Start the local APIC timer, periodic, vector 0x20.
 * 4. Loop: COUNTER += 1; read the TSC and keep the largest gap between two
 *    reads; every 4096 iterations checksum the region again.
 *
 * Registers kept across the loop: r12 RAM base, r13 status, r14 seed,
 * r15 region, rbx region length, r10 the last TSC read, r9 COUNTER.
 *
 * guest.rs's guest_asm! defines STATUS, STACK_TOP, IDT and the S_* offsets
 * of the status block before this file, from the layout the VMM reads; this
 * file is part of that macro's template, so it must not contain braces.
 */
	.equ	LAPIC, 0xfee00000
	.equ	TIMER_VECTOR, 0x20


	.pushsection .rodata.lu_vmm_guest, "a"
	.code64
	.balign 4096
	.globl lu_vmm_guest_x86_64_start
	.hidden lu_vmm_guest_x86_64_start
lu_vmm_guest_x86_64_start:
	lea	lu_vmm_guest_x86_64_start(%rip), %r12
	lea	STATUS(%r12), %r13
	lea	STACK_TOP(%r12), %rsp

	/* 1. GDT and IDT. */
	sub	$16, %rsp
	lea	gdt(%rip), %rax
	mov	%rax, 2(%rsp)
	movw	$(gdt_end - gdt - 1), (%rsp)
	lgdt	(%rsp)
	lea	IDT(%r12), %rdi
	xor	%ecx, %ecx
1:	lea	fatal(%rip), %rsi
	cmp	$(TIMER_VECTOR * 2), %ecx	/* ecx: 2 * vector */
	jne	2f
	lea	timer(%rip), %rsi
2:	mov	%rsi, %rax		/* the gate: offset 15:0, selector 8, */
	and	$0xffff, %eax		/* present interrupt gate, offset 31:16 */
	or	$(8 << 16), %rax
	mov	$0x8e00, %edx
	shl	$32, %rdx
	or	%rdx, %rax
	mov	%rsi, %rdx
	shr	$16, %rdx
	and	$0xffff, %edx
	shl	$48, %rdx
	or	%rdx, %rax
	mov	%rax, (%rdi,%rcx,8)
	mov	%rsi, %rdx		/* offset 63:32 */
	shr	$32, %rdx
	mov	%rdx, 8(%rdi,%rcx,8)
	add	$2, %ecx
	cmp	$512, %ecx
	jb	1b
	lea	IDT(%r12), %rax
	mov	%rax, 2(%rsp)
	movw	$4095, (%rsp)
	lidt	(%rsp)
	add	$16, %rsp

	/* 2. The region and its checksum. */
	mov	S_SEED(%r13), %r14
	mov	S_REGION_OFF(%r13), %r15
	add	%r12, %r15
	mov	S_REGION_LEN(%r13), %rbx
	movabs	$0x9e3779b97f4a7c15, %r8
	xor	%ecx, %ecx
3:	cmp	%rbx, %rcx
	jae	4f
	mov	%rcx, %rax
	imul	%r8, %rax
	add	%r14, %rax
	mov	%rax, %rdx
	shr	$29, %rdx
	xor	%rdx, %rax
	mov	%rax, (%r15,%rcx)
	add	$8, %rcx
	jmp	3b
4:	call	checksum
	mov	%rax, S_EXPECTED(%r13)
	mov	%rax, S_LAST_SUM(%r13)

	/* 3. The local APIC timer. */
	mov	$LAPIC, %edi
	movl	$0x1ff, 0xf0(%rdi)		/* SVR: enabled, spurious vector 0xff */
	movl	$0xb, 0x3e0(%rdi)		/* divide by 1 */
	movl	$(TIMER_VECTOR | (1 << 17)), 0x320(%rdi)	/* LVT timer: periodic */
	mov	S_PERIOD(%r13), %rax
	movl	%eax, 0x380(%rdi)		/* initial count */

	/* 4. Count. */
	mov	S_COUNTER(%r13), %r9
	lfence
	rdtsc
	shl	$32, %rdx
	or	%rdx, %rax
	mov	%rax, %r10
	mov	%rax, S_START_CNT(%r13)
	mov	%rax, S_LAST_CNT(%r13)
	movabs	$0x315453455547554c, %rax	/* "LUGUEST1", little-endian */
	mov	%rax, S_MAGIC(%r13)
	sti
loop:
	inc	%r9
	mov	%r9, S_COUNTER(%r13)
	lfence
	rdtsc
	shl	$32, %rdx
	or	%rdx, %rax
	mov	%rax, %rcx
	sub	%r10, %rcx
	cmp	S_MAX_GAP(%r13), %rcx
	jbe	5f
	mov	%rcx, S_MAX_GAP(%r13)
	mov	%r10, S_GAP_BEFORE(%r13)
	mov	%rax, S_GAP_AFTER(%r13)
	mov	%r9, S_GAP_COUNTER(%r13)
5:	mov	%rax, %r10
	mov	%rax, S_LAST_CNT(%r13)
	test	$0xfff, %r9
	jnz	loop
	call	checksum
	mov	%rax, S_LAST_SUM(%r13)
	cmp	S_EXPECTED(%r13), %rax
	je	6f
	incq	S_BAD_PASSES(%r13)
6:	incq	S_PASSES(%r13)
	jmp	loop

/* rax = checksum of the region; clobbers rcx, rdx. */
checksum:
	xor	%eax, %eax
	xor	%ecx, %ecx
7:	cmp	%rbx, %rcx
	jae	8f
	mov	(%r15,%rcx), %rdx
	rol	$1, %rax
	xor	%rdx, %rax
	add	$8, %rcx
	jmp	7b
8:	ret

/* The local APIC timer: count, end of interrupt. */
timer:
	push	%rdi
	incq	S_TICKS(%r13)
	mov	$LAPIC, %edi
	movl	$0, 0xb0(%rdi)			/* EOI */
	pop	%rdi
	iretq

/* Any other vector: record the interrupted RIP (or error code) and stop. */
fatal:
	movq	$1, S_FAULT(%r13)
	mov	(%rsp), %rax
	mov	%rax, S_FAULT_ELR(%r13)
	mov	8(%rsp), %rax
	mov	%rax, S_FAULT_ESR(%r13)
9:	cli
	hlt
	jmp	9b

	.balign	8
gdt:
	.quad	0
	.quad	0x00af9a000000ffff		/* 0x08: 64-bit code */
	.quad	0x00cf92000000ffff		/* 0x10: data */
gdt_end:
	.globl lu_vmm_guest_x86_64_end
	.hidden lu_vmm_guest_x86_64_end
lu_vmm_guest_x86_64_end:
	.type	lu_vmm_guest_x86_64_start, @object
	.size	lu_vmm_guest_x86_64_start, lu_vmm_guest_x86_64_end - lu_vmm_guest_x86_64_start
	.popsection

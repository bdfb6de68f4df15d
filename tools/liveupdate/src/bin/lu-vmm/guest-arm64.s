/* SPDX-License-Identifier: GPL-2.0 */
/*
 * lu-vmm's arm64 guest: counts, checks a region of its RAM and takes timer
 * interrupts, forever.  lu-vmm copies it to the start of guest RAM and starts
 * the vCPU there at EL1h, MMU off.  Position independent.
 *
 * The status block (STATUS bytes into RAM, u64 words, see guest.rs) is how the
 * guest reports: the VMM writes SEED, REGION_OFF and REGION_LEN before the
 * first run; the guest writes the rest.
 *
 * 1. Fill the region with liveupdate::memfd::pattern(SEED, offset) and keep
 *    its checksum (rotate left by one, xor each word) as EXPECTED.
 * 2. Route the virtual timer's PPI 27 through the vGICv3 (distributor,
 *    redistributor, CPU interface) and tick every CNTFRQ/100.
 * 3. Loop: COUNTER += 1; read CNTVCT_EL0 and keep the largest gap between two
 *    reads (MAX_GAP, with the reads around it and the COUNTER after it);
 *    every 4096 iterations checksum the region again (PASSES, BAD_PASSES).
 *
 * Registers kept across the loop: x19 RAM base, x20 status, x21 seed,
 * x22 region, x23 region length, x25 the last CNTVCT read, x26 COUNTER.
 *
 * guest.rs's guest_asm! defines STATUS, STACK_TOP, IDT and the S_* offsets
 * of the status block before this file, from the layout the VMM reads; this
 * file is part of that macro's template, so it must not contain braces.
 */
	.equ	GICD, 0x08000000
	.equ	GICR_RD, 0x080a0000
	.equ	GICR_SGI, 0x080b0000
	.equ	VTIMER_PPI, 27



	.pushsection .rodata.lu_vmm_guest, "a"
	.balign 4096
	.globl lu_vmm_guest_arm64_start
	.hidden lu_vmm_guest_arm64_start
lu_vmm_guest_arm64_start:
	adr	x19, lu_vmm_guest_arm64_start
	mov	x20, #STATUS
	add	x20, x19, x20
	mov	x9, #STACK_TOP
	add	x9, x19, x9
	mov	sp, x9
	adr	x9, vectors
	msr	vbar_el1, x9
	isb

	mrs	x9, cntfrq_el0
	str	x9, [x20, #S_CNTFRQ]
	mov	x10, #100
	udiv	x9, x9, x10
	str	x9, [x20, #S_PERIOD]

	/* 1. The region and its checksum. */
	ldr	x21, [x20, #S_SEED]
	ldr	x22, [x20, #S_REGION_OFF]
	add	x22, x19, x22
	ldr	x23, [x20, #S_REGION_LEN]
	movz	x24, #0x7c15
	movk	x24, #0x7f4a, lsl #16
	movk	x24, #0x79b9, lsl #32
	movk	x24, #0x9e37, lsl #48
	mov	x0, #0
1:	cmp	x0, x23
	b.hs	2f
	mul	x1, x0, x24
	add	x1, x1, x21
	eor	x1, x1, x1, lsr #29
	str	x1, [x22, x0]
	add	x0, x0, #8
	b	1b
2:	bl	checksum
	str	x0, [x20, #S_EXPECTED]
	str	x0, [x20, #S_LAST_SUM]

	/* 2. Timer interrupts: distributor, redistributor, CPU interface. */
	mov	x9, #GICD
	mov	w10, #0x12		/* GICD_CTLR: EnableGrp1, ARE */
	str	w10, [x9]
	mov	x9, #GICR_RD
	str	wzr, [x9, #0x14]	/* GICR_WAKER: awake */
	mov	x9, #GICR_SGI
	mov	w10, #(1 << VTIMER_PPI)
	str	w10, [x9, #0x80]	/* GICR_IGROUPR0: group 1 */
	mov	w11, #0x80000000	/* priority 0x80, byte 27 of IPRIORITYR */
	str	w11, [x9, #0x418]
	str	w10, [x9, #0x100]	/* GICR_ISENABLER0 */
	mov	x10, #0xff
	msr	s3_0_c4_c6_0, x10	/* ICC_PMR_EL1 */
	mov	x10, #1
	msr	s3_0_c12_c12_7, x10	/* ICC_IGRPEN1_EL1 */
	ldr	x10, [x20, #S_PERIOD]
	msr	cntv_tval_el0, x10
	mov	x10, #1
	msr	cntv_ctl_el0, x10	/* enabled, not masked */
	isb

	/* 3. Count. */
	ldr	x26, [x20, #S_COUNTER]
	mrs	x25, cntvct_el0
	str	x25, [x20, #S_START_CNT]
	str	x25, [x20, #S_LAST_CNT]
	movz	x9, #0x554c			/* "LUGUEST1", little-endian */
	movk	x9, #0x5547, lsl #16
	movk	x9, #0x5345, lsl #32
	movk	x9, #0x3154, lsl #48
	str	x9, [x20, #S_MAGIC]
	msr	daifclr, #2
loop:
	add	x26, x26, #1
	str	x26, [x20, #S_COUNTER]
	isb
	mrs	x0, cntvct_el0
	sub	x1, x0, x25
	ldr	x2, [x20, #S_MAX_GAP]
	cmp	x1, x2
	b.ls	3f
	str	x1, [x20, #S_MAX_GAP]
	str	x25, [x20, #S_GAP_BEFORE]
	str	x0, [x20, #S_GAP_AFTER]
	str	x26, [x20, #S_GAP_COUNTER]
3:	mov	x25, x0
	str	x0, [x20, #S_LAST_CNT]
	tst	x26, #0xfff
	b.ne	loop
	bl	checksum
	str	x0, [x20, #S_LAST_SUM]
	ldr	x1, [x20, #S_EXPECTED]
	cmp	x0, x1
	b.eq	4f
	ldr	x2, [x20, #S_BAD_PASSES]
	add	x2, x2, #1
	str	x2, [x20, #S_BAD_PASSES]
4:	ldr	x2, [x20, #S_PASSES]
	add	x2, x2, #1
	str	x2, [x20, #S_PASSES]
	b	loop

/* x0 = checksum of the region; clobbers x1, x2. */
checksum:
	mov	x0, #0
	mov	x1, #0
5:	cmp	x1, x23
	b.hs	6f
	ldr	x2, [x22, x1]
	ror	x0, x0, #63
	eor	x0, x0, x2
	add	x1, x1, #8
	b	5b
6:	ret

/* Any exception but an IRQ: record it and stop. */
fatal:
	str	x9, [x20, #S_FAULT]
	mrs	x10, esr_el1
	str	x10, [x20, #S_FAULT_ESR]
	mrs	x10, elr_el1
	str	x10, [x20, #S_FAULT_ELR]
7:	wfi
	b	7b

	.macro	unexpected n
	.balign	0x80
	mov	x9, #(\n + 1)
	b	fatal
	.endm

	.balign	2048
vectors:
	unexpected 0
	unexpected 1
	unexpected 2
	unexpected 3
	unexpected 4		/* current EL, SPx: synchronous */
	.balign	0x80		/* current EL, SPx: IRQ */
	stp	x0, x1, [sp, #-16]!
	mrs	x0, s3_0_c12_c12_0	/* ICC_IAR1_EL1 */
	cmp	x0, #VTIMER_PPI
	b.ne	8f
	ldr	x1, [x20, #S_TICKS]
	add	x1, x1, #1
	str	x1, [x20, #S_TICKS]
	ldr	x1, [x20, #S_PERIOD]
	msr	cntv_tval_el0, x1
	b	9f
8:	cmp	x0, #1020		/* 1020-1023: special, no EOI */
	b.hs	10f
	ldr	x1, [x20, #S_OTHER_IRQS]
	add	x1, x1, #1
	str	x1, [x20, #S_OTHER_IRQS]
9:	msr	s3_0_c12_c12_1, x0	/* ICC_EOIR1_EL1 */
10:	ldp	x0, x1, [sp], #16
	eret
	unexpected 6
	unexpected 7
	unexpected 8
	unexpected 9
	unexpected 10
	unexpected 11
	unexpected 12
	unexpected 13
	unexpected 14
	unexpected 15
	.balign	0x80
	.globl lu_vmm_guest_arm64_end
	.hidden lu_vmm_guest_arm64_end
lu_vmm_guest_arm64_end:
	.type	lu_vmm_guest_arm64_start, %object
	.size	lu_vmm_guest_arm64_start, lu_vmm_guest_arm64_end - lu_vmm_guest_arm64_start
	.popsection

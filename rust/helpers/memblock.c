// SPDX-License-Identifier: GPL-2.0

#include <linux/memblock.h>

__rust_helper phys_addr_t rust_helper_memblock_low_address_limit(void)
{
	return ARCH_LOW_ADDRESS_LIMIT;
}

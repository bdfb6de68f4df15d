// SPDX-License-Identifier: GPL-2.0

#include <linux/io.h>
#include <linux/memory_hotplug.h>
#include <linux/mm.h>

__rust_helper void *rust_helper_phys_to_virt(phys_addr_t address)
{
	return phys_to_virt(address);
}

__rust_helper struct page *rust_helper_pfn_to_page(unsigned long pfn)
{
	return pfn_to_page(pfn);
}

__rust_helper unsigned long rust_helper_page_to_pfn(const struct page *page)
{
	return page_to_pfn(page);
}

__rust_helper struct page *rust_helper_pfn_to_online_page(unsigned long pfn)
{
	return pfn_to_online_page(pfn);
}

__rust_helper unsigned long rust_helper_page_private(const struct page *page)
{
	return page_private(page);
}

__rust_helper void rust_helper_set_page_private(struct page *page,
						unsigned long private)
{
	set_page_private(page, private);
}

__rust_helper struct folio *rust_helper_page_folio(struct page *page)
{
	return page_folio(page);
}

__rust_helper int rust_helper_pfn_to_nid(unsigned long pfn)
{
	return pfn_to_nid(pfn);
}

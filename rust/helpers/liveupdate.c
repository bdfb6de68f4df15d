// SPDX-License-Identifier: GPL-2.0

#include <linux/io.h>
#include <linux/mm.h>
#include <linux/module.h>

__rust_helper void *rust_helper_folio_address(const struct folio *folio)
{
	return folio_address(folio);
}

__rust_helper void rust_helper_folio_put(struct folio *folio)
{
	folio_put(folio);
}

__rust_helper size_t rust_helper_folio_size(const struct folio *folio)
{
	return folio_size(folio);
}

__rust_helper phys_addr_t rust_helper_virt_to_phys(void *address)
{
	return virt_to_phys(address);
}

__rust_helper bool rust_helper_try_module_get(struct module *module)
{
	return try_module_get(module);
}

__rust_helper void rust_helper_module_put(struct module *module)
{
	module_put(module);
}

__rust_helper struct folio *rust_helper_virt_to_folio(const void *x)
{
	return virt_to_folio(x);
}

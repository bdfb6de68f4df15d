// SPDX-License-Identifier: GPL-2.0

#include <linux/fs.h>
#include <linux/io.h>
#include <linux/module.h>
#include <linux/shmem_fs.h>

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

/* The memfd abstraction (kernel::liveupdate::memfd). */

__rust_helper bool rust_helper_shmem_file(struct file *file)
{
	return shmem_file(file);
}

__rust_helper struct inode *rust_helper_file_inode(const struct file *f)
{
	return file_inode(f);
}

__rust_helper void rust_helper_inode_lock(struct inode *inode)
{
	inode_lock(inode);
}

__rust_helper int rust_helper_inode_lock_killable(struct inode *inode)
{
	return inode_lock_killable(inode);
}

__rust_helper void rust_helper_inode_unlock(struct inode *inode)
{
	inode_unlock(inode);
}

__rust_helper loff_t rust_helper_i_size_read(const struct inode *inode)
{
	return i_size_read(inode);
}

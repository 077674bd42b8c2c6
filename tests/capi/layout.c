/* Prints the layout of the header's types, for tests/capi_layout.rs. */
#include <stddef.h>
#include <stdio.h>

#include "../../src/capi/dao_vfio.h"

int main(void)
{
	printf("sizeof_mem %zu\n", sizeof(struct dao_vfio_mem_resouce));
	printf("mem_addr %zu\n", offsetof(struct dao_vfio_mem_resouce, addr));
	printf("mem_len %zu\n", offsetof(struct dao_vfio_mem_resouce, len));
	printf("sizeof_device %zu\n", sizeof(struct dao_vfio_device));
	printf("name %zu\n", offsetof(struct dao_vfio_device, name));
	printf("device_fd %zu\n", offsetof(struct dao_vfio_device, device_fd));
	printf("group_fd %zu\n", offsetof(struct dao_vfio_device, group_fd));
	printf("num_resource %zu\n", offsetof(struct dao_vfio_device, num_resource));
	printf("mem %zu\n", offsetof(struct dao_vfio_device, mem));
	printf("type %zu\n", offsetof(struct dao_vfio_device, type));
	printf("prime %zu\n", offsetof(struct dao_vfio_device, prime));
	printf("mbar %zu\n", offsetof(struct dao_vfio_device, mbar));
	printf("sizeof_type %zu\n", sizeof(enum dao_vfio_dev_type));
	printf("name_max %d\n", VFIO_DEV_NAME_MAX_LEN);
	printf("bar0 %d\nbar2 %d\nbar4 %d\n", DAO_VFIO_DEV_BAR0, DAO_VFIO_DEV_BAR2, DAO_VFIO_DEV_BAR4);
	printf("platform %d\npcie %d\n", DAO_VFIO_DEV_PLATFORM, DAO_VFIO_DEV_PCIE);
	return 0;
}

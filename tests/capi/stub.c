/* The functions of dao_vfio.h as stubs that do nothing: linked instead
 * of libdao_vfio.a, they give the DAO-style C program without the library,
 * so that tests/sizes can tell what the library adds to it. Never run. */
#include "../../src/capi/dao_vfio.h"

int dao_vfio_init(void) { return -1; }
int dao_vfio_device_setup(const char *dev_name, struct dao_vfio_device *pdev) { (void)dev_name; (void)pdev; return -1; }
void dao_vfio_device_free(struct dao_vfio_device *pdev) { (void)pdev; }
void dao_vfio_fini(void) {}
int dao_vfio_device_request_fd(const struct dao_vfio_device *pdev) { (void)pdev; return -1; }
int dao_vfio_vf_token_set(const char *uuid) { (void)uuid; return -1; }

//! SR-IOV through a context: setting a PF's VF token, and setting up a
//! device with one.

use rustix::io::Errno;

use super::{Context, DeviceHandle};
use crate::error::{Error, ErrorKind, Step};
use crate::kernel::{Kernel, Request, TOKEN};
use crate::name::{Bus, DeviceName};
use crate::sriov::{self, SriovRole};
use crate::sys;
use crate::vf_token::VfToken;

impl<K: Kernel, const DEVICES: usize, const GROUPS: usize, const DMA: usize> Context<K, DEVICES, GROUPS, DMA> {
    /// Sets up PCI device `name` with VF token `token`, as
    /// [`Context::setup`] does otherwise. The token is passed only where the
    /// kernel checks one (passing it elsewhere makes the kernel refuse the
    /// device): to a VF whose PF is bound to vfio-pci (the token must be the
    /// one the PF's user set: [`Context::set_vf_token`]), and to a PF (whose
    /// VFs, if in use, were opened with it; if none is, it becomes the PF's
    /// token). Any other device is set up as [`Context::setup`] would.
    ///
    /// The kernel reads the token from `VFIO_GROUP_GET_DEVICE_FD`'s
    /// `"NAME vf_token=UUID"`: such a device is opened through its group.
    /// Under [`Backend::Auto`](crate::Backend::Auto) that is what happens
    /// (a PF and the VFs of a vfio-pci PF take the group path there, token
    /// or not, since the cdev of Linux 6.6 to 6.12 neither carries nor checks
    /// a token); with [`Backend::Iommufd`](crate::Backend::Iommufd) forced
    /// the setup is refused with [`ErrorKind::VfTokenNeedsGroup`].
    ///
    /// A missing or wrong token is refused with [`ErrorKind::VfTokenRefused`],
    /// naming the PF; nothing is left open.
    pub fn setup_vf(&mut self, name: &str, token: &VfToken) -> Result<crate::DeviceHandle, Error> {
        self.setup_on_with_token(Bus::Pci, name, Some(token))
    }

    /// [`Context::setup_on`], passing `token` (if any) where the kernel
    /// checks one, as [`Context::setup_vf`] does: the C interface's single
    /// way in (one copy of setup in the C library).
    pub(crate) fn setup_on_with_token(
        &mut self,
        bus: Bus,
        name: &str,
        token: Option<&VfToken>,
    ) -> Result<DeviceHandle, Error> {
        let name = DeviceName::new(name)?;
        self.setup_token_named(bus, name, token).map_err(|e| e.for_device(name))
    }

    fn setup_token_named(
        &mut self,
        bus: Bus,
        name: DeviceName,
        token: Option<&VfToken>,
    ) -> Result<DeviceHandle, Error> {
        let token = match token {
            Some(_) if self.id == super::UNOPENED => return Err(Error::new(ErrorKind::ContextNotOpen)),
            // A PF, or a VF whose PF is bound to vfio-pci (two readlinks).
            Some(t) if bus == Bus::Pci && sriov::token_guarded(&self.kernel, &name)? => Some(t),
            _ => None,
        };
        self.setup_named(Some(bus), name, token)
    }

    /// Sets the VF token of the PF behind `handle`
    /// (`VFIO_DEVICE_FEATURE` with `VFIO_DEVICE_FEATURE_SET |
    /// VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`): the VFs' users must then give it
    /// to [`Context::setup_vf`]. vfio-pci starts each PF with a random token
    /// nobody knows, so its VFs open only once the PF's user sets one. A
    /// device that is not an SR-IOV PF under vfio-pci is refused with
    /// [`ErrorKind::NotSriovPf`] (the kernel answers `ENOTTY`; `EINVAL` for a
    /// device that is not a PCI device).
    #[doc(alias = "VFIO_DEVICE_FEATURE_PCI_VF_TOKEN")]
    pub fn set_vf_token(&self, handle: &DeviceHandle, token: &VfToken) -> Result<(), Error> {
        let slot = self.slot(handle)?;
        let state = &self.devices[slot];
        let name = state.name;
        let feature = sys::FeatureVfToken {
            argsz: sys::argsz::<sys::FeatureVfToken>(),
            flags: sys::DEVICE_FEATURE_SET | sys::DEVICE_FEATURE_PCI_VF_TOKEN,
            uuid: *token.as_bytes(),
        };
        let set = self.kernel.ioctl(&TOKEN, state.fd(), Request::DeviceSetVfToken(&feature));
        set.map(drop).map_err(|e| {
            // ENOTTY: not a PF to vfio-pci (or a kernel without the
            // feature); EINVAL: not a PCI device (or an argument refused).
            // Sysfs says whether the device is a PF before "not a PF" is.
            let role = matches!(e, Errno::NOTTY | Errno::INVAL).then(|| sriov::role_of(&self.kernel, &name));
            let error = match role {
                Some(Ok(SriovRole::Vf { pf })) => {
                    Error::new(ErrorKind::NotSriovPf { vf_of: Some(crate::Label::new(pf.as_str().as_bytes())) })
                        .with_errno(e)
                }
                Some(Ok(SriovRole::None)) => Error::new(ErrorKind::NotSriovPf { vf_of: None }).with_errno(e),
                _ => Error::syscall(Step::SetVfToken, e),
            };
            error.for_device(name)
        })
    }
}

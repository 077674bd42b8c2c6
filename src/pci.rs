//! PCI configuration space, seen through the device's config region (index
//! 7, read and written with `pread`/`pwrite`; vfio-pci virtualizes parts of
//! it, such as the BARs and some capabilities).

use bitflags::bitflags;

use crate::device::Device;
use crate::error::{Error, ErrorKind, Step};
use crate::kernel::{Kernel, Request, TOKEN};
use crate::name::Bus;
use crate::pci_caps::{self, Capabilities};
use crate::sys::{pci_region, DeviceFlags};

bitflags! {
    /// The PCI command register (config offset 0x04).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PciCommand: u16 {
        /// Respond to I/O space accesses.
        const IO_SPACE = 1 << 0;
        /// Respond to memory space accesses (BAR MMIO).
        const MEMORY_SPACE = 1 << 1;
        /// Allow the device to master the bus: needed for DMA and MSI.
        const BUS_MASTER = 1 << 2;
        /// Parity error response.
        const PARITY_ERROR_RESPONSE = 1 << 6;
        /// SERR# enable.
        const SERR = 1 << 8;
        /// Disable legacy INTx.
        const INTX_DISABLE = 1 << 10;
        const _ = !0;
    }
}

/// Offset of the command register.
pub const PCI_COMMAND: u64 = 0x04;

/// What a BAR register says, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// Not implemented (its region has size 0), or the upper half of a 64-bit BAR.
    Unused,
    /// Memory space.
    Memory {
        /// A 64-bit BAR (it takes the next BAR register too).
        is_64bit: bool,
        /// Prefetchable.
        prefetchable: bool,
    },
    /// I/O port space.
    Io,
}

/// One BAR of a PCI device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// The BAR number (0 to 5), also its region index.
    pub index: u32,
    /// Its kind.
    pub kind: BarKind,
    /// Its size in bytes, from the region info (0 when unused).
    pub size: u64,
}

impl<K: Kernel> Device<'_, K> {
    fn require_pci(&self) -> Result<(), Error> {
        if self.bus() == Bus::Pci {
            Ok(())
        } else {
            Err(self.error(ErrorKind::NotPci))
        }
    }

    /// Reads `N` bytes of config space at `offset`.
    fn config_read<const N: usize>(&self, offset: u64) -> Result<[u8; N], Error> {
        self.require_pci()?;
        let mut bytes = [0u8; N];
        self.read_region(pci_region::CONFIG, offset, &mut bytes)?;
        Ok(bytes)
    }

    /// Reads a config space byte (a system call).
    pub fn config_read8(&self, offset: u64) -> Result<u8, Error> {
        self.config_read::<1>(offset).map(|b| b[0])
    }

    /// Reads a little-endian config space word (a system call).
    pub fn config_read16(&self, offset: u64) -> Result<u16, Error> {
        self.config_read(offset).map(u16::from_le_bytes)
    }

    /// Reads a little-endian config space dword (a system call).
    pub fn config_read32(&self, offset: u64) -> Result<u32, Error> {
        self.config_read(offset).map(u32::from_le_bytes)
    }

    /// Writes a config space byte.
    pub fn config_write8(&self, offset: u64, value: u8) -> Result<(), Error> {
        self.require_pci()?;
        self.write_region(pci_region::CONFIG, offset, &[value])
    }

    /// Writes a little-endian config space word.
    pub fn config_write16(&self, offset: u64, value: u16) -> Result<(), Error> {
        self.require_pci()?;
        self.write_region(pci_region::CONFIG, offset, &value.to_le_bytes())
    }

    /// Writes a little-endian config space dword.
    pub fn config_write32(&self, offset: u64, value: u32) -> Result<(), Error> {
        self.require_pci()?;
        self.write_region(pci_region::CONFIG, offset, &value.to_le_bytes())
    }

    /// The command register.
    pub fn pci_command(&self) -> Result<PciCommand, Error> {
        self.config_read16(PCI_COMMAND).map(PciCommand::from_bits_retain)
    }

    /// Sets `bits` in the command register (read, modify, write) and returns
    /// the new value as read back.
    pub fn pci_command_set(&self, bits: PciCommand) -> Result<PciCommand, Error> {
        let now = self.pci_command()?;
        self.config_write16(PCI_COMMAND, (now | bits).bits())?;
        self.pci_command()
    }

    /// Clears `bits` in the command register and returns the new value.
    pub fn pci_command_clear(&self, bits: PciCommand) -> Result<PciCommand, Error> {
        let now = self.pci_command()?;
        self.config_write16(PCI_COMMAND, (now - bits).bits())?;
        self.pci_command()
    }

    /// Lets the device master the bus (DMA, MSI): sets BUS_MASTER.
    pub fn enable_bus_master(&self) -> Result<(), Error> {
        self.pci_command_set(PciCommand::BUS_MASTER).map(drop)
    }

    /// Reads the config space (up to 4 KiB) and parses its standard and
    /// extended capability lists.
    pub fn pci_capabilities(&self) -> Result<Capabilities, Error> {
        self.require_pci()?;
        let size = self.region(pci_region::CONFIG)?.size().min(4096) as usize;
        let mut config = [0u8; 4096];
        self.read_region(pci_region::CONFIG, 0, &mut config[..size])?;
        pci_caps::parse_capabilities(&config[..size]).map_err(|e| self.error(ErrorKind::PciCapabilities(e)))
    }

    /// The six BARs, decoded from config space and the region sizes.
    pub fn pci_bars(&self) -> Result<[Bar; 6], Error> {
        self.require_pci()?;
        let mut bars = [Bar { index: 0, kind: BarKind::Unused, size: 0 }; 6];
        let mut upper_half = false;
        for (i, bar) in bars.iter_mut().enumerate() {
            bar.index = i as u32;
            let raw = self.config_read32(0x10 + 4 * i as u64)?;
            let size = self.region(i as u32).map(|r| r.size()).unwrap_or(0);
            if upper_half || size == 0 {
                upper_half = false;
                continue;
            }
            bar.size = size;
            bar.kind = if raw & 1 == 1 {
                BarKind::Io
            } else {
                let is_64bit = (raw >> 1) & 0b11 == 0b10;
                upper_half = is_64bit;
                BarKind::Memory { is_64bit, prefetchable: raw & 0b1000 != 0 }
            };
        }
        Ok(bars)
    }

    /// Resets the device with `VFIO_DEVICE_RESET` (function-level or bus
    /// reset, as the kernel can). Refused without a system call when the
    /// device's flags lack RESET (QEMU's edu, for one).
    pub fn reset(&self) -> Result<(), Error> {
        if !self.flags().contains(DeviceFlags::RESET) {
            return Err(self.error(ErrorKind::ResetUnsupported));
        }
        self.kernel()
            .ioctl(&TOKEN, self.fd(), Request::DeviceReset)
            .map(drop)
            .map_err(|e| Error::syscall(Step::Reset, e).for_device(self.name_value()))
    }
}

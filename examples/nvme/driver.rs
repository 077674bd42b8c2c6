//! A small polled NVMe driver on the crate's public API, generic over the
//! kernel: the example (`examples/nvme/main.rs`), the board tests
//! (`tests/board_nvme.rs`) and the benchmark (`benches/vfio/nvme.rs`) run this
//! same code.
//!
//! One DMA buffer holds everything the controller reads or writes: the admin
//! queue pair, one I/O queue pair and [`MAX_DEPTH`] 4 KiB data slots. The
//! controller is reset and enabled through BAR 0, identified, and given one
//! I/O queue pair; completions are polled by their phase bit, never by
//! interrupt. The I/O loop ([`Controller::random_reads`]) makes no system
//! call and no allocation: descriptor stores into DMA memory, `io_wmb`, a
//! doorbell store; a completion load, `io_rmb`, the data.
//!
//! NVMe 1.4 base specification: registers (section 3.1), queues and
//! doorbells (4.1), commands (5, 6).

use std::time::{Duration, Instant};

use dao_vfio::barrier::{io_rmb, io_wmb};
use dao_vfio::sys::pci_region;
use dao_vfio::{
    register_block, Context, DeviceHandle, DmaBuffer, DmaHandle, DmaOptions, Error, Kernel, PciCommand, Region, WO,
};

/// What the driver can fail with: the crate's errors, and the controller's.
pub type Result<T> = core::result::Result<T, Box<dyn std::error::Error>>;

/// The controller's registers in BAR 0.
pub mod reg {
    /// Capabilities (64-bit): MQES 15:0, DSTRD 35:32, TO 31:24 (500 ms units).
    pub const CAP: usize = 0x00;
    /// Version.
    pub const VS: usize = 0x08;
    /// Configuration: EN bit 0, IOSQES 19:16, IOCQES 23:20.
    pub const CC: usize = 0x14;
    /// Status: RDY bit 0, CFS bit 1.
    pub const CSTS: usize = 0x1c;
    /// Admin queue attributes: ACQS 27:16, ASQS 11:0 (0-based).
    pub const AQA: usize = 0x24;
    /// Admin submission queue base (64-bit).
    pub const ASQ: usize = 0x28;
    /// Admin completion queue base (64-bit).
    pub const ACQ: usize = 0x30;
    /// The first doorbell (admin SQ tail).
    pub const DOORBELLS: usize = 0x1000;
}

/// Bytes of one block the driver reads and writes.
pub const BLOCK: usize = 4096;
/// The most commands the I/O loop keeps in flight.
pub const MAX_DEPTH: usize = 32;
/// Entries of each queue (one more than the deepest loop needs: a full
/// queue keeps one entry empty).
const QUEUE_ENTRIES: u16 = 64;
const ADMIN_ENTRIES: u16 = 16;
// The DMA buffer's layout: four queues of a page each, then the data slots.
const ADMIN_SQ: usize = 0x0000;
const ADMIN_CQ: usize = 0x1000;
const IO_SQ: usize = 0x2000;
const IO_CQ: usize = 0x3000;
const DATA: usize = 0x4000;
/// Bytes of the driver's DMA buffer.
pub const DMA_LEN: usize = DATA + MAX_DEPTH * BLOCK;

/// Command opcodes.
mod op {
    pub const CREATE_SQ: u8 = 0x01;
    pub const CREATE_CQ: u8 = 0x05;
    pub const IDENTIFY: u8 = 0x06;
    pub const SET_FEATURES: u8 = 0x09;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
}

/// What Identify said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Model number (Identify Controller bytes 24..64), trimmed.
    pub model: String,
    /// Serial number (bytes 4..24), trimmed.
    pub serial: String,
    /// The version register, e.g. 0x10400 for 1.4.
    pub version: u32,
    /// Namespace 1's logical block size in bytes.
    pub lba_bytes: u32,
    /// Namespace 1's size in [`BLOCK`]s.
    pub blocks: u64,
}

/// A completion the controller posted: its dword 3. The driver needs
/// neither dword 0 (no command it sends returns a value there) nor the
/// submission queue head of dword 2 (it never has more than [`MAX_DEPTH`]
/// commands in a queue of 64 entries, so the queue cannot fill).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The command identifier it completes.
    pub cid: u16,
    /// Status field (the entry's bits 31:17: status code 7:0, status code
    /// type 10:8, do-not-retry 14): 0 is success.
    pub status: u16,
}

impl Completion {
    /// Status code type (0 generic, 1 command specific, 2 media/data
    /// integrity, 3 path).
    pub fn sct(&self) -> u16 {
        (self.status >> 8) & 0x7
    }

    /// Status code.
    pub fn sc(&self) -> u16 {
        self.status & 0xff
    }
}

/// An NVMe controller set up for DMA, owning its context.
pub struct Nvme<K: Kernel> {
    vfio: Context<K>,
    dev: DeviceHandle,
    mem: DmaHandle,
}

impl<K: Kernel> Nvme<K> {
    /// Sets the controller up: memory space and bus mastering on, and one
    /// DMA buffer for queues and data. On error the context is dropped,
    /// which frees what was set up.
    pub fn open(mut vfio: Context<K>, name: &str) -> Result<Self> {
        let dev = vfio.setup(name)?;
        vfio.device(&dev)?.pci_command_set(PciCommand::MEMORY_SPACE | PciCommand::BUS_MASTER)?;
        let mem = vfio.dma_alloc(DMA_LEN, DmaOptions::default())?;
        Ok(Nvme { vfio, dev, mem })
    }

    /// Resets and enables the controller, identifies it and namespace 1,
    /// and creates one I/O queue pair: the controller, ready for I/O.
    pub fn start(&mut self, timeout: Duration) -> Result<Controller<'_>> {
        let bar = self.vfio.device(&self.dev)?.region(pci_region::BAR0)?;
        let mem = self.vfio.dma(&mut self.mem)?;
        Controller::start(bar, mem, timeout)
    }

    /// The context (for what the driver does not wrap: `iommu_info`, the
    /// backend in use).
    pub fn context(&self) -> &Context<K> {
        &self.vfio
    }

    /// Disables the controller (so it stops all DMA before its memory goes),
    /// frees the buffer and the device, and closes the context.
    pub fn close(self) -> Result<()> {
        let Nvme { mut vfio, dev, mem } = self;
        let disabled = disable(vfio.device(&dev)?.region(pci_region::BAR0)?, Duration::from_secs(5));
        vfio.dma_free(mem).map_err(|(_, e)| e)?;
        vfio.free(dev)?;
        vfio.close().map_err(|(_, e): (_, Error)| e)?;
        disabled
    }
}

/// Clears CC.EN and waits for CSTS.RDY to clear: the controller stops
/// processing commands and DMA.
fn disable(bar: &Region, timeout: Duration) -> Result<()> {
    let cc = bar.read32(reg::CC)?;
    bar.write32(reg::CC, cc & !1)?;
    wait_ready(bar, false, timeout)
}

fn wait_ready(bar: &Region, ready: bool, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let csts = bar.read32(reg::CSTS)?;
        if csts == u32::MAX {
            return Err("the controller reads all ones (it is gone, or its memory space is off)".into());
        }
        if csts & 1 == ready as u32 {
            return Ok(());
        }
        if csts & 2 != 0 && ready {
            return Err(format!("controller fatal status while enabling (CSTS {csts:#x})").into());
        }
        if start.elapsed() > timeout {
            return Err(format!("CSTS.RDY did not become {} within {timeout:?} (CSTS {csts:#x})", ready as u8).into());
        }
    }
}

register_block! {
    /// One doorbell: a submission queue's tail or a completion queue's head.
    struct Doorbell {
        0x0 => value: WO<u32>,
    }
}

/// One queue pair's state: tails, heads and phase, and its two doorbells,
/// each a register block checked once (bounds, alignment) when the queue is
/// made, so ringing it is one store.
struct Queue<'a> {
    sq: usize,
    cq: usize,
    entries: u16,
    tail: u16,
    head: u16,
    phase: u32,
    sq_doorbell: &'a Doorbell,
    cq_doorbell: &'a Doorbell,
}

impl<'a> Queue<'a> {
    fn new(bar: &'a Region, id: usize, sq: usize, cq: usize, entries: u16, stride: usize) -> Result<Self> {
        let sq_doorbell = reg::DOORBELLS + 2 * id * stride;
        Ok(Queue {
            sq,
            cq,
            entries,
            tail: 0,
            head: 0,
            phase: 1,
            sq_doorbell: bar.block(sq_doorbell)?,
            cq_doorbell: bar.block(sq_doorbell + stride)?,
        })
    }
}

/// A submission queue entry: the 16 dwords, as 8 little-endian qwords.
type Command = [u64; 8];

fn command(opcode: u8, cid: u16, nsid: u32, prp1: u64) -> Command {
    let mut c = [0u64; 8];
    c[0] = opcode as u64 | (cid as u64) << 16 | (nsid as u64) << 32;
    c[3] = prp1;
    c
}

/// Sets command dwords 10 and 11.
fn cdw10_11(c: &mut Command, cdw10: u32, cdw11: u32) {
    c[5] = cdw10 as u64 | (cdw11 as u64) << 32;
}

/// Sets command dword 12 (and 13).
fn cdw12(c: &mut Command, cdw12: u32) {
    c[6] = cdw12 as u64;
}

/// Block `block`'s content: word `w` of it.
pub fn pattern(block: u64, w: usize) -> u64 {
    (block << 16 | w as u64) ^ 0xda0_0000_0000_0000 ^ (w as u64) << 40
}

/// Written into a data slot before a read, so a read that wrote nothing is seen.
const POISON: u64 = 0xdead_beef_dead_beef;

/// What a run of reads measured.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Commands completed.
    pub ios: usize,
    /// Clock time from the first submission to the last completion.
    pub elapsed_ns: u64,
}

impl Run {
    /// Completed commands per second.
    pub fn iops(&self) -> f64 {
        self.ios as f64 * 1e9 / self.elapsed_ns.max(1) as f64
    }
}

/// A controller enabled with one I/O queue pair, borrowing its [`Nvme`].
pub struct Controller<'a> {
    bar: &'a Region,
    mem: DmaBuffer<'a>,
    admin: Queue<'a>,
    io: Queue<'a>,
    identity: Identity,
    /// Logical blocks per [`BLOCK`] (from Identify): a command's block count.
    per_block: u64,
    timeout: Duration,
}

impl<'a> Controller<'a> {
    fn start(bar: &'a Region, mem: DmaBuffer<'a>, timeout: Duration) -> Result<Self> {
        // Checked once: every register and doorbell the driver touches is mapped.
        let cap = bar.read64(reg::CAP)?;
        let stride = 4usize << ((cap >> 32) & 0xf);
        bar.read32(reg::DOORBELLS + 4 * stride - 4)?;
        let mqes = (cap & 0xffff) as u16;
        if mqes < QUEUE_ENTRIES - 1 {
            return Err(
                format!("the controller's queues hold {} entries, the driver needs {QUEUE_ENTRIES}", mqes + 1).into()
            );
        }
        // CAP.TO is the worst case for RDY to change, in 500 ms units.
        let ready_timeout = Duration::from_millis(500 * ((cap >> 24) & 0xff).max(1)).max(timeout);
        disable(bar, ready_timeout)?;
        mem.fill(0, DATA, 0)?; // empty queues: every phase bit 0
        let base = mem.iova();
        let aqa = (ADMIN_ENTRIES as u32 - 1) << 16 | (ADMIN_ENTRIES as u32 - 1);
        bar.write32(reg::AQA, aqa)?;
        bar.write64(reg::ASQ, base + ADMIN_SQ as u64)?;
        bar.write64(reg::ACQ, base + ADMIN_CQ as u64)?;
        // EN, NVM command set, 4 KiB pages, round robin, 64-byte SQ and 16-byte CQ entries.
        bar.write32(reg::CC, 1 | 6 << 16 | 4 << 20)?;
        wait_ready(bar, true, ready_timeout)?;
        let version = bar.read32(reg::VS)?;
        let placeholder = Identity { model: String::new(), serial: String::new(), version, lba_bytes: 0, blocks: 0 };
        let mut ctrl = Controller {
            bar,
            mem,
            admin: Queue::new(bar, 0, ADMIN_SQ, ADMIN_CQ, ADMIN_ENTRIES, stride)?,
            io: Queue::new(bar, 1, IO_SQ, IO_CQ, QUEUE_ENTRIES, stride)?,
            identity: placeholder,
            per_block: 1,
            timeout,
        };
        ctrl.identify()?;
        ctrl.create_io_queues()?;
        Ok(ctrl)
    }

    /// What Identify said.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The controller's BAR 0.
    pub fn bar(&self) -> &Region {
        self.bar
    }

    /// The device address of data slot `slot`.
    pub fn slot_iova(&self, slot: usize) -> u64 {
        self.mem.iova() + (DATA + slot * BLOCK) as u64
    }

    /// Runs one admin command and waits for its completion; a status other
    /// than success is an error.
    fn admin(&mut self, c: Command) -> Result<Completion> {
        let done = self.run_one(true, c)?;
        if done.status != 0 {
            return Err(format!("admin opcode {:#x} failed: status {:#x}", c[0] & 0xff, done.status).into());
        }
        Ok(done)
    }

    /// Submits one command on the admin or I/O queue and waits for its
    /// completion (outside the I/O loop: it reads the clock for its timeout).
    fn run_one(&mut self, admin: bool, c: Command) -> Result<Completion> {
        let q = if admin { &mut self.admin } else { &mut self.io };
        submit(&self.mem, q, &c)?;
        let start = Instant::now();
        loop {
            if let Some(done) = poll(&self.mem, q)? {
                return Ok(done);
            }
            if start.elapsed() > self.timeout {
                let csts = self.bar.read32(reg::CSTS)?;
                return Err(format!("no completion within {:?} (CSTS {csts:#x})", self.timeout).into());
            }
        }
    }

    fn identify(&mut self) -> Result<()> {
        let page = self.slot_iova(0);
        let mut c = command(op::IDENTIFY, 1, 0, page);
        cdw10_11(&mut c, 1, 0); // CNS 1: the controller
        self.admin(c)?;
        let text = |mem: &DmaBuffer, at: usize, len: usize| -> Result<String> {
            let mut b = vec![0u8; len];
            mem.read(DATA + at, &mut b)?;
            Ok(String::from_utf8_lossy(&b).trim().to_string())
        };
        self.identity.serial = text(&self.mem, 4, 20)?;
        self.identity.model = text(&self.mem, 24, 40)?;
        let mut c = command(op::IDENTIFY, 2, 1, page);
        cdw10_11(&mut c, 0, 0); // CNS 0: namespace 1
        self.admin(c)?;
        let nsze = self.mem.read64(DATA)?;
        let mut flbas = [0u8];
        self.mem.read(DATA + 26, &mut flbas)?;
        let lbaf = self.mem.read32(DATA + 128 + 4 * (flbas[0] & 0xf) as usize)?;
        let lbads = (lbaf >> 16) & 0xff;
        if !(9..=12).contains(&lbads) {
            return Err(format!(
                "namespace 1 has {}-byte blocks: the driver reads 4 KiB with 512 B to 4 KiB blocks",
                1u64 << lbads
            )
            .into());
        }
        self.identity.lba_bytes = 1 << lbads;
        self.per_block = BLOCK as u64 >> lbads;
        self.identity.blocks = nsze * self.identity.lba_bytes as u64 / BLOCK as u64;
        if self.identity.blocks == 0 {
            return Err("namespace 1 is smaller than one 4 KiB block".into());
        }
        Ok(())
    }

    fn create_io_queues(&mut self) -> Result<()> {
        // Number of queues: one submission and one completion queue (0-based).
        let mut c = command(op::SET_FEATURES, 3, 0, 0);
        cdw10_11(&mut c, 0x07, 0);
        self.admin(c)?;
        let size = (QUEUE_ENTRIES as u32 - 1) << 16;
        let mut c = command(op::CREATE_CQ, 4, 0, self.mem.iova() + IO_CQ as u64);
        cdw10_11(&mut c, size | 1, 1); // queue 1, physically contiguous, no interrupt
        self.admin(c)?;
        let mut c = command(op::CREATE_SQ, 5, 0, self.mem.iova() + IO_SQ as u64);
        cdw10_11(&mut c, size | 1, 1 << 16 | 1); // queue 1, on CQ 1, physically contiguous
        self.admin(c)?;
        Ok(())
    }

    /// A read or write of one block into or from `iova` on the I/O queue.
    #[inline(always)] // the I/O loop's: the command stays in registers
    fn rw(&self, opcode: u8, cid: u16, block: u64, iova: u64) -> Command {
        let mut c = command(opcode, cid, 1, iova);
        let slba = block * self.per_block;
        cdw10_11(&mut c, slba as u32, (slba >> 32) as u32);
        cdw12(&mut c, self.per_block as u32 - 1);
        c
    }

    /// Reads block `block` into memory at `iova` (which may be anywhere, mapped
    /// or not): the completion, whatever its status.
    pub fn read_to(&mut self, block: u64, iova: u64) -> Result<Completion> {
        let c = self.rw(op::READ, 0x7000, block, iova);
        self.run_one(false, c)
    }

    /// Writes [`pattern`] to blocks `0..blocks`, `depth` at a time.
    pub fn write_pattern(&mut self, blocks: u64, depth: usize) -> Result<()> {
        self.transfer(op::WRITE, blocks, depth, |mem, at, block| {
            for w in 0..BLOCK / 8 {
                mem.write64(at + 8 * w, pattern(block, w))?;
            }
            Ok(())
        })
    }

    /// Reads blocks `0..blocks` back, `depth` at a time, and compares every
    /// word with [`pattern`].
    pub fn verify_pattern(&mut self, blocks: u64, depth: usize) -> Result<()> {
        self.transfer(op::READ, blocks, depth, |mem, at, _| mem.fill(at, BLOCK, 0).map_err(Into::into))
    }

    /// Writes or reads blocks `0..blocks` in order, `depth` commands in
    /// flight; `prepare` fills a slot before its command. Reads are checked
    /// word by word.
    fn transfer(
        &mut self,
        opcode: u8,
        blocks: u64,
        depth: usize,
        prepare: impl Fn(&DmaBuffer, usize, u64) -> Result<()>,
    ) -> Result<()> {
        let depth = depth.clamp(1, MAX_DEPTH);
        let mut in_slot = [0u64; MAX_DEPTH];
        let mut busy = 0u64; // the slots with a command in flight
        let (mut next, mut done, mut inflight) = (0u64, 0u64, 0usize);
        let start = Instant::now();
        while done < blocks {
            while inflight < depth && next < blocks {
                // A free slot (completions may come in any order).
                let slot = (!busy).trailing_zeros() as usize;
                busy |= 1 << slot;
                prepare(&self.mem, DATA + slot * BLOCK, next)?;
                in_slot[slot] = next;
                let c = self.rw(opcode, slot as u16, next, self.slot_iova(slot));
                submit(&self.mem, &mut self.io, &c)?;
                next += 1;
                inflight += 1;
            }
            match poll(&self.mem, &mut self.io)? {
                Some(c) => {
                    let slot = c.cid as usize;
                    if slot >= depth || busy & 1 << slot == 0 {
                        return Err(format!("completion for command {} that is not in flight", c.cid).into());
                    }
                    busy &= !(1 << slot);
                    let block = in_slot[slot];
                    if c.status != 0 {
                        return Err(format!("I/O on block {block} failed: status {:#x}", c.status).into());
                    }
                    if opcode == op::READ {
                        for w in 0..BLOCK / 8 {
                            let got = self.mem.read64(DATA + slot * BLOCK + 8 * w)?;
                            if got != pattern(block, w) {
                                return Err(format!(
                                    "block {block} word {w}: read {got:#x}, wrote {:#x}",
                                    pattern(block, w)
                                )
                                .into());
                            }
                        }
                    }
                    done += 1;
                    inflight -= 1;
                }
                None if start.elapsed() > self.timeout * 20 => {
                    return Err(format!("{done} of {blocks} blocks done, then no completion").into());
                }
                None => {}
            }
        }
        Ok(())
    }

    /// The I/O loop: `lat.len()` reads of random 4 KiB blocks among
    /// `0..blocks` (written with [`Controller::write_pattern`]), `depth` in
    /// flight, each checked (its first and last words) and timed with
    /// `clock` (nanoseconds) into `lat`. No system call (but what `clock`
    /// makes) and no allocation: stores into the queue, `io_wmb`, the
    /// doorbell; loads of the completion queue, `io_rmb`, the data.
    /// Fails after `timeout_ns` on `clock` without a completion.
    // Never inlined: in a function of its own the loop reaches the
    // controller's state at small offsets from one pointer, whatever the
    // size of the caller's frame.
    #[inline(never)]
    pub fn random_reads(
        &mut self,
        blocks: u64,
        depth: usize,
        seed: u64,
        lat: &mut [u64],
        clock: &mut impl FnMut() -> u64,
        timeout_ns: u64,
    ) -> Result<Run> {
        let depth = depth.clamp(1, MAX_DEPTH);
        let n = lat.len();
        let mut slots = Slots { rng: seed | 1, block: [0; MAX_DEPTH], started: [0; MAX_DEPTH] };
        let (mut submitted, mut done) = (0usize, 0usize);
        let first = clock();
        let mut last = first;
        // Fill the queue, then one new command per completion, in its slot.
        while submitted < depth.min(n) {
            self.issue_read(&mut slots, submitted, blocks, clock())?;
            submitted += 1;
        }
        while done < n {
            let Some(c) = poll(&self.mem, &mut self.io)? else {
                if clock() - last > timeout_ns {
                    return Err(stalled(self.bar, done, n));
                }
                continue;
            };
            let now = clock();
            last = now;
            let slot = c.cid as usize;
            if slot >= depth {
                return Err(not_submitted(c));
            }
            let block = slots.block[slot];
            let at = DATA + slot * BLOCK;
            let (head, tail) = (self.mem.read64(at)?, self.mem.read64(at + BLOCK - 8)?);
            if c.status != 0 || head != pattern(block, 0) || tail != pattern(block, BLOCK / 8 - 1) {
                return Err(bad_read(c, block, head, tail));
            }
            lat[done] = now - slots.started[slot];
            done += 1;
            if submitted < n {
                self.issue_read(&mut slots, slot, blocks, now)?;
                submitted += 1;
            }
        }
        Ok(Run { ios: n, elapsed_ns: last - first })
    }
}

/// The I/O loop's timeout error. Its errors are built out of line: the
/// loop keeps only its fast path, and no pointer to the controller escapes.
#[cold]
fn stalled(bar: &Region, done: usize, n: usize) -> Box<dyn std::error::Error> {
    let csts = match bar.read32(reg::CSTS) {
        Ok(csts) => format!("{csts:#x}"),
        Err(e) => format!("unreadable: {e}"),
    };
    format!("{done} of {n} reads done, then none within the timeout (CSTS {csts})").into()
}

#[cold]
fn not_submitted(c: Completion) -> Box<dyn std::error::Error> {
    format!("completion for command {} that was never submitted", c.cid).into()
}

#[cold]
fn bad_read(c: Completion, block: u64, head: u64, tail: u64) -> Box<dyn std::error::Error> {
    if c.status != 0 {
        return format!("read of block {block} failed: status {:#x}", c.status).into();
    }
    format!("block {block}: read {head:#x}..{tail:#x}, not its pattern").into()
}

/// The I/O loop's commands in flight: each slot's block and start time,
/// and the random block generator (xorshift64).
struct Slots {
    rng: u64,
    block: [u64; MAX_DEPTH],
    started: [u64; MAX_DEPTH],
}

impl Controller<'_> {
    /// Submits a read of a random block into data slot `slot`, poisoned first.
    #[inline(always)] // the I/O loop's step: its state stays in registers
    fn issue_read(&mut self, slots: &mut Slots, slot: usize, blocks: u64, now: u64) -> Result<()> {
        slots.rng ^= slots.rng << 13;
        slots.rng ^= slots.rng >> 7;
        slots.rng ^= slots.rng << 17;
        let block = slots.rng % blocks;
        let at = DATA + slot * BLOCK;
        self.mem.write64(at, POISON)?;
        self.mem.write64(at + BLOCK - 8, POISON)?;
        slots.block[slot] = block;
        slots.started[slot] = now;
        let c = self.rw(op::READ, slot as u16, block, self.slot_iova(slot));
        submit(&self.mem, &mut self.io, &c)
    }
}

/// Writes `c` at the queue's tail (one bounds check for its 8 qwords), then
/// (after `io_wmb`: the entry before the doorbell) rings the tail doorbell.
#[inline(always)] // the I/O loop's step: the command stays in registers
fn submit(mem: &DmaBuffer, q: &mut Queue, c: &Command) -> Result<()> {
    mem.write64s(q.sq + q.tail as usize * 64, c)?;
    q.tail += 1;
    if q.tail == q.entries {
        q.tail = 0;
    }
    io_wmb();
    // SAFETY: the controller reads the entries and moves the data they name
    // through the IOMMU, which maps for it only this driver's DMA buffer: Rust
    // memory is reached only through the buffer's copying accessors.
    unsafe { q.sq_doorbell.value.write(q.tail as u32) };
    Ok(())
}

/// The next completion, if the controller posted one (its phase bit is the
/// queue's current phase): advances the head and rings the head doorbell.
/// Its `io_rmb` orders the phase bit's load before the caller's loads of
/// what the command wrote.
#[inline(always)] // the I/O loop's step: the completion stays in registers
fn poll(mem: &DmaBuffer, q: &mut Queue) -> Result<Option<Completion>> {
    let at = q.cq + q.head as usize * 16;
    let dw3 = mem.read32(at + 12)?;
    if (dw3 >> 16) & 1 != q.phase {
        return Ok(None);
    }
    io_rmb(); // the phase bit before the data the command wrote
    q.head += 1;
    if q.head == q.entries {
        q.head = 0;
        q.phase ^= 1;
    }
    // SAFETY: the head only frees completion entries for the controller.
    unsafe { q.cq_doorbell.value.write(q.head as u32) };
    Ok(Some(Completion { cid: dw3 as u16, status: (dw3 >> 17) as u16 }))
}

# shellcheck shell=bash
# Shared definitions of the virtual board rig. Sourced by prepare, run, test and demo;
# never executed on its own.
#
# Everything heavy (kernels, busybox, device tree, base initramfs) lives in a cache OUTSIDE
# the checkout; see `board_input_hash` for how a checkout finds the artifacts that match it.

BOARD_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BOARD_DIR/../.." && pwd)"
CACHE="${DAO_VFIO_CACHE:-/var/cache/dao-vfio}"

# Markers printed by the guest init (tests/board/init) and parsed by tests/board/run.
# Kept in sync by hand with init; both are part of the input hash below.
MARK_START='@@dao-vfio-start@@'
MARK_EXIT_RE='@@dao-vfio-exit=([0-9]+)@@'
# Prefix of the boot-time `vfio-bind status` lines; run shows them on stderr.
MARK_STATUS='@@dao-vfio-status@@ '

# The boards. A board is named by its CPU architecture (the cargo target is
# ARCH-unknown-linux-musl), plus the kernel's version when one architecture has two:
#   x86_64        Debian bookworm's stock 6.1 kernel (VFIO as modules; legacy interface only)
#   aarch64       Debian trixie's linux-source-6.12 + arm64-kernel.config (iommufd + legacy)
#   aarch64-6.1   Debian bookworm's linux-source-6.1 + arm64-6.1-kernel.config: DAO's own kernel
#                 (its cn10k.config options; no iommufd, no VFIO cdev: legacy interface only)
# Both aarch64 boards run the same machine, device tree, busybox and aarch64 binaries; cargo's
# runner for the target is `run aarch64`, which boots the board named by DAO_VFIO_BOARD
# (test, capi/run and benches/run export it; see board_select).
BOARDS=(x86_64 aarch64 aarch64-6.1)

# The architecture (cargo target ARCH-unknown-linux-musl) of BOARD.
board_arch() { # BOARD
    case "$1" in
        x86_64) echo x86_64 ;;
        aarch64|aarch64-6.1) echo aarch64 ;;
        *) return 1 ;;
    esac
}

# The kernel command lines. `panic=-1` + QEMU's -no-reboot: a guest panic ends QEMU at once.
# `dao_vfio.board=BOARD` (added by board_append) names the board to the guest's init, which
# checks it against the kernel it runs on (an unknown parameter with a dot is ignored by the
# kernel and only shows in /proc/cmdline).
X86_APPEND='console=ttyS0 intel_iommu=on quiet panic=-1'
ARM_APPEND='console=ttyAMA0 quiet panic=-1 vfio.enable_unsafe_noiommu_mode=1 vfio_platform.reset_required=0 vfio_pci.enable_sriov=1'
board_append() { # BOARD
    case "$(board_arch "$1")" in
        x86_64)  echo "$X86_APPEND dao_vfio.board=$1" ;;
        aarch64) echo "$ARM_APPEND dao_vfio.board=$1" ;;
    esac
}

# QEMU machine arguments (without kernel/initrd/dtb/console). The aarch64 ones are also used
# to dump the device tree, so the edited tree always matches the machine that boots with it.
# -nodefaults drops the default NIC, VGA, monitor and serial backends; the serial port is
# added back by `run` on stdio.
board_qemu_machine() { # BOARD or ARCH
    case "$(board_arch "$1")" in
        x86_64)  echo "qemu-system-x86_64 -accel tcg -machine q35 -m 512 -smp 1 -nodefaults -vga none -device intel-iommu -device edu" ;;
        aarch64) echo "qemu-system-aarch64 -accel tcg -machine virt,iommu=smmuv3,gic-version=3 -cpu cortex-a57 -m 512 -smp 1 -nodefaults -device edu" ;;
        *) return 1 ;;
    esac
}

# The NVMe controllers every board has besides edu (not part of board_qemu_machine, which also
# dumps the aarch64 device tree: PCI devices are not in it, and the disk is per run):
# - `dao-nvme`: a controller with one namespace on DISK (a raw image `run` creates for each boot),
#   for the polled NVMe driver (examples/nvme.rs) and the kernel's nvme driver beside it;
# - `dao-nvme-pf`: an SR-IOV physical function with 2 VFs' worth of flexible resources (QEMU 7.2's
#   nvme does SR-IOV); vfio-pci is loaded with enable_sriov=1, so its VFs can be created.
# - a shared IOMMU group: the two functions of slot SHARED_SLOT, an edu (function 0, the `mate`)
#   and an NVMe controller without namespaces (function 1, `dao-nvme-blocker`), one multifunction
#   device without ACS, which Linux puts in one group; the init binds the mate to vfio-pci and
#   leaves the blocker to the kernel's nvme driver, so the group is not viable until a test moves it.
NVME_SERIAL=dao-nvme
NVME_PF_SERIAL=dao-nvme-pf
NVME_BLOCKER_SERIAL=dao-nvme-blocker
SHARED_SLOT=6
board_qemu_devices() { # DISK
    echo "-drive file=$1,if=none,id=nvm0,format=raw,cache=unsafe -device nvme,serial=$NVME_SERIAL,drive=nvm0" \
        "-device nvme-subsys,id=subsys0 -device nvme,serial=$NVME_PF_SERIAL,subsys=subsys0,sriov_max_vfs=2,sriov_vq_flexible=4,sriov_vi_flexible=2,msix_qsize=8,max_ioqpairs=8" \
        "-device edu,addr=$SHARED_SLOT.0,multifunction=on -device nvme,serial=$NVME_BLOCKER_SERIAL,addr=$SHARED_SLOT.1,multifunction=on"
}
# The disk image's size: small enough to create in a moment, large enough for random reads.
NVME_DISK_MIB=64

# The guest binds its devices with the vfio-bind tool (src/bin/vfio-bind.rs, feature `tools`),
# built for the board's target;
# `run` packs it into the initramfs as /bin/vfio-bind and takes its path from this variable.
BIND_TOOL_VAR=DAO_VFIO_BIND_TOOL

# Builds vfio-bind for ARCH (cargo profile PROFILE: dev or release) and exports its path in
# $DAO_VFIO_BIND_TOOL for `run`.
board_build_bind_tool() { # ARCH (or BOARD) [PROFILE]
    local arch profile="${2:-dev}" dir
    arch="$(board_arch "$1")" || { echo "board: no such board: $1" >&2; exit 2; }
    [ "$profile" = dev ] && dir=debug || dir="$profile"
    (cd "$REPO_DIR" && cargo build --quiet --profile "$profile" --target "$arch-unknown-linux-musl" --features tools --bin vfio-bind) \
        || { echo "board $arch: building the vfio-bind tool failed" >&2; exit 1; }
    export DAO_VFIO_BIND_TOOL="$REPO_DIR/target/$arch-unknown-linux-musl/$dir/vfio-bind"
}

board_check() { # BOARD
    board_arch "${1:-}" >/dev/null \
        || { echo "board: BOARD must be one of ${BOARDS[*]} (got '${1:-}')" >&2; exit 2; }
}

# The board `run RUNNER_BOARD` boots: RUNNER_BOARD itself, or DAO_VFIO_BOARD when set (cargo's
# runner for aarch64 binaries is `run aarch64`; DAO_VFIO_BOARD=aarch64-6.1 boots them on the 6.1
# board). DAO_VFIO_BOARD must name a board of the same architecture. Prints the board.
board_select() { # RUNNER_BOARD
    local runner="$1" asked="${DAO_VFIO_BOARD:-}"
    board_check "$runner"
    [ -n "$asked" ] && [ "$asked" != "$runner" ] || { echo "$runner"; return 0; }
    board_check "$asked"
    if [ "$runner" != "$(board_arch "$runner")" ] || [ "$(board_arch "$asked")" != "$runner" ]; then
        echo "board: DAO_VFIO_BOARD=$asked cannot run a binary meant for board $runner" >&2
        exit 2
    fi
    echo "$asked"
}

# sha256 of the repo files that decide what prepare produces and how run boots it.
# prepare writes $CACHE/boards/<arch>-<hash>.env; run looks for the file with its own hash,
# so an edited init/config/script is noticed (run then asks for prepare) and two checkouts
# with different rigs can share one cache.
board_input_hash() {
    (cd "$BOARD_DIR" && cat lib.sh init prepare build-arm64-kernel arm64-kernel.config arm64-6.1-kernel.config \
        arm64-6.1-vfio-platform-reset.patch) | sha256sum | cut -c1-16
}

board_env_file() { # BOARD [INPUT_HASH]
    echo "$CACHE/boards/$1-${2:-$(board_input_hash)}.env"
}

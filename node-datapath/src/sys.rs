//! The few raw `bpf(2)` commands aya 0.14 does not expose: for cgroup
//! links, opening a pinned object, link/program info, atomic link update and
//! forced link detach; for maps, batched updates and deletes. Each wrapper fills one command's attribute struct
//! (the kernel zero-extends the short attribute) and returns an `io::Error`.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

// The info layouts below read little-endian halves of 64-bit words, and
// build.rs compiles the programs for x86.
#[cfg(not(target_endian = "little"))]
compile_error!("the datapath supports little-endian hosts only");

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_LINK_DETACH: libc::c_long = 34;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `BPF_LINK_TYPE_CGROUP` in `enum bpf_link_type`.
pub(crate) const BPF_LINK_TYPE_CGROUP: u32 = 3;
/// `BPF_LINK_TYPE_TCX` in `enum bpf_link_type`.
pub(crate) const BPF_LINK_TYPE_TCX: u32 = 11;
/// `BPF_TCX_INGRESS` in `enum bpf_attach_type`.
pub(crate) const BPF_TCX_INGRESS: u32 = 46;
/// `BPF_LINK_TYPE_NETNS` in `enum bpf_link_type`.
pub(crate) const BPF_LINK_TYPE_NETNS: u32 = 5;
/// `BPF_SK_LOOKUP` in `enum bpf_attach_type`.
pub(crate) const BPF_SK_LOOKUP: u32 = 36;

/// Calls `bpf(cmd, attr, sizeof attr)`.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, properly sized `#[repr(C)]` attribute for
    // `cmd`; the kernel reads (and for info commands writes through pointers
    // it contains) at most `size_of::<T>()` bytes of it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a file descriptor returned by the kernel.
fn owned_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    let fd = libc::c_int::try_from(ret).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Opens a pinned BPF object (map, program or link) on bpffs.
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    owned_fd(bpf(BPF_OBJ_GET, &mut attr)?)
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Fills `buf` with the object's `bpf_*_info`.
fn obj_info(fd: BorrowedFd<'_>, buf: &mut [u64]) -> io::Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: (buf.len() * 8) as u32,
        info: buf.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(|_| ())
}

/// What the kernel says about a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinkInfo {
    pub(crate) link_type: u32,
    pub(crate) prog_id: u32,
    /// For cgroup links: the cgroup id (its cgroup2 inode number), 0 once
    /// the cgroup is gone.
    pub(crate) cgroup_id: u64,
    pub(crate) attach_type: u32,
    /// For tcx links: the interface index (0 once it is gone) and attach
    /// type; for netns links the same two words are the namespace's inode
    /// and the attach type.
    pub(crate) tcx_ifindex: u32,
    pub(crate) tcx_attach_type: u32,
}

/// `struct bpf_link_info`: type, id, prog_id, then (8-aligned) the union
/// whose cgroup member is `{ __u64 cgroup_id; __u32 attach_type; }` and
/// whose tcx and netns members are `{ __u32 ifindex|netns_ino; __u32
/// attach_type; }`.
pub(crate) fn link_info(fd: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let mut buf = [0u64; 16];
    obj_info(fd, &mut buf)?;
    Ok(LinkInfo {
        link_type: buf[0] as u32,
        prog_id: buf[1] as u32,
        cgroup_id: buf[2],
        attach_type: buf[3] as u32,
        tcx_ifindex: buf[2] as u32,
        tcx_attach_type: (buf[2] >> 32) as u32,
    })
}

/// A program's tag (hash of its instructions with map references masked)
/// and the sorted ids of the maps it uses.
///
/// `struct bpf_prog_info`: `__u32 type, id; __u8 tag[8];` … at byte 52
/// `__u32 nr_map_ids;` at 56 `__u64 map_ids;` (a user pointer).
pub(crate) fn prog_tag_and_maps(fd: BorrowedFd<'_>) -> io::Result<([u8; 8], Vec<u32>)> {
    let mut buf = [0u64; 32];
    obj_info(fd, &mut buf)?;
    let tag = buf[1].to_ne_bytes();
    let nr = (buf[6] >> 32) as u32;
    let mut ids = vec![0u32; nr as usize];
    if nr > 0 {
        let mut buf = [0u64; 32];
        buf[6] = u64::from(nr) << 32;
        buf[7] = ids.as_mut_ptr() as u64;
        obj_info(fd, &mut buf)?;
        let got = ((buf[6] >> 32) as usize).min(ids.len());
        ids.truncate(got);
    }
    ids.sort_unstable();
    Ok((tag, ids))
}

#[repr(C)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// Opens a loaded program by id.
pub(crate) fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        id,
        next_id: 0,
        open_flags: 0,
    };
    owned_fd(bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?)
}

#[repr(C)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Atomically replaces the program behind a link (`BPF_LINK_UPDATE`).
pub(crate) fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

#[repr(C)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// Detaches a link from its hook now, whoever else still holds it.
pub(crate) fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkDetachAttr {
        link_fd: link.as_raw_fd() as u32,
    };
    bpf(BPF_LINK_DETACH, &mut attr).map(|_| ())
}

/// `struct { in_batch, out_batch, keys, values, count, map_fd, elem_flags,
/// flags }`, the attribute of the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `BPF_MAP_UPDATE_BATCH` (`values` non-empty) or `BPF_MAP_DELETE_BATCH`
/// of `keys` on `map`. The kernel applies the elements in order, one at a
/// time, and reports how many it processed, also on failure; that number
/// is returned with the result.
fn map_batch<K: Copy, V: Copy>(
    map: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> (usize, io::Result<()>) {
    let (cmd, values_ptr) = if values.is_empty() {
        (BPF_MAP_DELETE_BATCH, 0)
    } else {
        (BPF_MAP_UPDATE_BATCH, values.as_ptr() as u64)
    };
    let Ok(count) = u32::try_from(keys.len()) else {
        return (0, Err(io::Error::other("batch too large")));
    };
    if !values.is_empty() && values.len() != keys.len() {
        return (
            0,
            Err(io::Error::other("batch keys and values differ in length")),
        );
    }
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values_ptr,
        count,
        map_fd: map.as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    let result = bpf(cmd, &mut attr).map(|_| ());
    // The kernel wrote back the number of elements processed.
    let done = (attr.count as usize).min(keys.len());
    (done, result)
}

/// Inserts or updates `keys[i] → values[i]` in order (`BPF_MAP_UPDATE_BATCH`,
/// `BPF_ANY`). `K`/`V` must be the map's `#[repr(C)]` key/value types
/// without implicit padding. Returns how many were written before an error.
pub(crate) fn map_update_batch<K: Copy, V: Copy>(
    map: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> (usize, io::Result<()>) {
    if keys.is_empty() {
        return (0, Ok(()));
    }
    map_batch(map, keys, values)
}

/// Deletes `keys` in order (`BPF_MAP_DELETE_BATCH`); an absent key stops
/// the batch with `ENOENT`. Returns how many were deleted before an error.
pub(crate) fn map_delete_batch<K: Copy>(
    map: BorrowedFd<'_>,
    keys: &[K],
) -> (usize, io::Result<()>) {
    if keys.is_empty() {
        return (0, Ok(()));
    }
    map_batch::<K, u8>(map, keys, &[])
}

/// The cgroup id of a cgroup v2 directory (its inode number).
pub(crate) fn cgroup_id(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.ino())
}

/// `statfs(2)` filesystem magic of `path`.
pub(crate) fn fs_magic(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: all-zero is a valid `statfs`.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is a valid out-pointer.
    let ret = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type)
}

/// `BPF_FS_MAGIC`.
pub(crate) const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// `CGROUP2_SUPER_MAGIC`.
pub(crate) const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

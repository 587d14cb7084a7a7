//! Resolving the conntrack kfunc calls of the embedded object.
//!
//! `bpf/kfunc.h` writes each kfunc call as the raw `call` instruction
//! (`src_reg` = `BPF_PSEUDO_KFUNC_CALL`) with a placeholder immediate; the
//! kernel wants the kfunc's BTF id there. libbpf resolves `__ksym` externs
//! to those ids, the aya release this project builds with does not, so
//! [`resolve`] patches every placeholder in the object's code sections
//! before the object is handed to aya. A kernel that lacks a kfunc leaves
//! its placeholders in place: only the program that calls it then fails to
//! load (the verifier rejects the unknown id), the socket programs do not.

use crate::DatapathError;

/// Placeholder immediate → kfunc name (bpf/kfunc.h `SY_KFUNC_*`).
pub(crate) const KFUNCS: [(u32, &str); 6] = [
    (0x5359_0001, "bpf_skb_ct_lookup"),
    (0x5359_0002, "bpf_ct_release"),
    (0x5359_0003, "bpf_skb_ct_alloc"),
    (0x5359_0004, "bpf_ct_insert_entry"),
    (0x5359_0005, "bpf_ct_set_nat_info"),
    (0x5359_0006, "bpf_ct_change_timeout"),
];

const BPF_JMP_CALL: u8 = 0x85;
const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
const SHT_PROGBITS: u32 = 1;
const SHF_EXECINSTR: u64 = 0x4;

/// An object's bytes in 8-byte aligned storage, as aya's ELF parser needs.
#[derive(Debug)]
pub(crate) struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    pub(crate) fn new(bytes: &[u8]) -> Self {
        let mut obj = Self {
            words: vec![0; bytes.len().div_ceil(8)],
            len: bytes.len(),
        };
        obj.bytes_mut().copy_from_slice(bytes);
        obj
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

fn read<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N)?.try_into().ok()
}

/// `(offset, size)` of every executable section of a little-endian ELF64.
fn code_sections(elf: &[u8]) -> Result<Vec<(usize, usize)>, String> {
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err("not a little-endian ELF64 object".into());
    }
    let field = |at: usize| read::<8>(elf, at).map(u64::from_le_bytes);
    let half = |at: usize| read::<2>(elf, at).map(u16::from_le_bytes);
    let (Some(shoff), Some(shentsize), Some(shnum)) = (field(0x28), half(0x3a), half(0x3c)) else {
        return Err("truncated ELF header".into());
    };
    let mut out = Vec::new();
    for i in 0..usize::from(shnum) {
        let sh = shoff as usize + i * usize::from(shentsize);
        let sh_type = read::<4>(elf, sh + 4).map(u32::from_le_bytes);
        let (Some(sh_type), Some(flags), Some(offset), Some(size)) =
            (sh_type, field(sh + 8), field(sh + 0x18), field(sh + 0x20))
        else {
            return Err(format!("truncated section header {i}"));
        };
        if sh_type == SHT_PROGBITS && flags & SHF_EXECINSTR != 0 {
            out.push((offset as usize, size as usize));
        }
    }
    Ok(out)
}

/// Replaces every kfunc placeholder in `object`'s code with the id `ids`
/// gives for its name; placeholders of kfuncs `ids` does not know are left.
/// Returns the patched copy and the names that were not resolved.
pub(crate) fn resolve(
    object: &[u8],
    ids: impl Fn(&str) -> Option<u32>,
) -> Result<(AlignedObject, Vec<&'static str>), DatapathError> {
    let sections = code_sections(object).map_err(DatapathError::Object)?;
    let mut patched = AlignedObject::new(object);
    let bytes = patched.bytes_mut();
    let mut missing = Vec::new();
    for (placeholder, name) in KFUNCS {
        let id = ids(name);
        for &(start, size) in &sections {
            for at in (start..start + size).step_by(8) {
                let Some(insn) = read::<8>(bytes, at) else {
                    break;
                };
                let imm = u32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
                let is_kfunc = insn[0] == BPF_JMP_CALL && insn[1] >> 4 == BPF_PSEUDO_KFUNC_CALL;
                if !is_kfunc || imm != placeholder {
                    continue;
                }
                match id {
                    Some(id) => bytes[at + 4..at + 8].copy_from_slice(&id.to_le_bytes()),
                    None if !missing.contains(&name) => missing.push(name),
                    None => {}
                }
            }
        }
    }
    Ok((patched, missing))
}

/// The running kernel's BTF id of each kfunc (`/sys/kernel/btf/vmlinux`).
pub(crate) fn kernel_ids() -> Result<impl Fn(&str) -> Option<u32>, DatapathError> {
    let btf =
        aya::Btf::from_sys_fs().map_err(|e| DatapathError::Object(format!("vmlinux BTF: {e}")))?;
    Ok(move |name: &str| {
        btf.id_by_type_name_kind(name, aya_obj::btf::BtfKind::Func)
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_in_the_object_is_patched_and_nothing_else() {
        let object = crate::object::OBJECT;
        let ids = |name: &str| {
            KFUNCS
                .iter()
                .position(|(_, n)| *n == name)
                .map(|i| 7000 + i as u32)
        };
        let (patched, missing) = resolve(object, ids).unwrap();
        assert!(missing.is_empty(), "{missing:?}");
        let (a, b) = (object, patched.bytes());
        assert_eq!(a.len(), b.len());
        let changed: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        assert!(!changed.is_empty(), "the object calls no kfunc");
        for &i in &changed {
            let insn = i - i % 8;
            assert_eq!((a[insn], a[insn + 1] >> 4), (BPF_JMP_CALL, 2), "byte {i}");
            assert!(
                (4..8).contains(&(i % 8)),
                "only immediates change (byte {i})"
            );
        }
        // Every kfunc the program calls is now an id of the table.
        for (placeholder, _) in KFUNCS {
            let needle = placeholder.to_le_bytes();
            assert!(
                !b.windows(4).any(|w| w == needle),
                "placeholder {placeholder:#x} left"
            );
        }
    }

    #[test]
    fn unknown_kfuncs_stay_placeholders_and_are_named() {
        let ids = |name: &str| (name != "bpf_ct_set_nat_info").then_some(9);
        let (patched, missing) = resolve(crate::object::OBJECT, ids).unwrap();
        assert_eq!(missing, ["bpf_ct_set_nat_info"]);
        let needle = 0x5359_0005u32.to_le_bytes();
        assert!(patched.bytes().windows(4).any(|w| w == needle));
    }

    #[test]
    fn a_file_that_is_not_an_elf_object_is_an_error() {
        assert!(resolve(b"not an object at all", |_| Some(1)).is_err());
        let truncated = &crate::object::OBJECT[..0x30];
        assert!(resolve(truncated, |_| Some(1)).is_err());
    }
}

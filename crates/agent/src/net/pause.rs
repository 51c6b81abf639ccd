//! The sandbox ("pause") image: a task on an overlay network gets its netns from a container
//! that only waits, so the task's own container joins a netns that is plumbed before its process
//! starts, and keeps it when it restarts. No registry is reachable, so the image is made here:
//! a tiny static ELF program (written out below: it calls pause(2), or ppoll(2) on arm64, in a
//! loop) imported as a one-file image.

use bollard::query_parameters::CreateImageOptions;
use bollard::Docker;
use futures::StreamExt;

/// The image's name; its tag changes whenever the program does.
pub const IMAGE: &str = "orch-pause:1";

/// The machine code of the waiting loop and the ELF machine number.
fn code() -> Option<(Vec<u8>, u16)> {
    if cfg!(target_arch = "x86_64") {
        // loop: mov eax, 34 (pause); syscall; jmp loop
        Some((vec![0xb8, 0x22, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7], 0x3e))
    } else if cfg!(target_arch = "aarch64") {
        // loop: x0..x3 = 0; x8 = 73 (ppoll); svc #0; b loop
        let words: [u32; 7] = [
            0xd280_0000,
            0xd280_0001,
            0xd280_0002,
            0xd280_0003,
            0xd280_0928,
            0xd400_0001,
            0x17ff_fffa,
        ];
        Some((words.iter().flat_map(|w| w.to_le_bytes()).collect(), 0xb7))
    } else {
        None
    }
}

/// A static 64-bit ELF executable: the header, one loadable segment, the code.
pub fn program() -> Option<Vec<u8>> {
    let (code, machine) = code()?;
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let total = HEADERS + code.len() as u64;
    let mut elf = Vec::with_capacity(total as usize);
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // executable
    elf.extend_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 1, 64, 0, 0] {
        elf.extend_from_slice(&v.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // read + execute
    elf.extend_from_slice(&0u64.to_le_bytes());
    elf.extend_from_slice(&BASE.to_le_bytes());
    elf.extend_from_slice(&BASE.to_le_bytes());
    elf.extend_from_slice(&total.to_le_bytes());
    elf.extend_from_slice(&total.to_le_bytes());
    elf.extend_from_slice(&0x1000u64.to_le_bytes());
    elf.extend_from_slice(&code);
    Some(elf)
}

/// A ustar archive holding one executable file.
pub fn tar_one(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, s: &[u8]| h[at..at + s.len()].copy_from_slice(s);
    put(&mut header, 0, name.as_bytes());
    put(&mut header, 100, b"0000755\0");
    put(&mut header, 108, b"0000000\0");
    put(&mut header, 116, b"0000000\0");
    put(
        &mut header,
        124,
        format!("{:011o}\0", data.len()).as_bytes(),
    );
    put(&mut header, 136, b"00000000000\0");
    put(&mut header, 148, b"        ");
    header[156] = b'0';
    put(&mut header, 257, b"ustar\0");
    put(&mut header, 263, b"00");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    put(&mut header, 148, format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Makes the image unless the engine has it.
pub async fn ensure_image(docker: &Docker) -> Result<(), String> {
    if docker.inspect_image(IMAGE).await.is_ok() {
        return Ok(());
    }
    let program = program().ok_or_else(|| {
        format!(
            "overlay networks need the sandbox program, not built for {}",
            std::env::consts::ARCH
        )
    })?;
    let (repo, tag) = IMAGE.split_once(':').unwrap_or((IMAGE, "latest"));
    let options = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(repo.into()),
        tag: Some(tag.into()),
        changes: vec!["CMD [\"/pause\"]".into()],
        ..Default::default()
    };
    let body = bollard::body_full(tar_one("pause", &program).into());
    let mut progress = docker.create_image(Some(options), Some(body), None);
    while let Some(item) = progress.next().await {
        item.map_err(|e| format!("cannot make the sandbox image {IMAGE}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_a_well_formed_elf() {
        let elf = program().expect("a program for this machine");
        assert_eq!(&elf[..4], b"\x7fELF");
        let entry = u64::from_le_bytes(elf[24..32].try_into().expect("8 bytes"));
        assert_eq!(entry, 0x40_0000 + 120, "the code follows the headers");
        let size = u64::from_le_bytes(elf[96..104].try_into().expect("8 bytes"));
        assert_eq!(size, elf.len() as u64, "one segment maps the whole file");
    }

    #[test]
    fn the_archive_has_one_checksummed_file() {
        let tar = tar_one("pause", b"abc");
        assert_eq!(tar.len(), 512 + 512 + 1024);
        assert_eq!(&tar[257..263], b"ustar\0");
        let mut h = tar[..512].to_vec();
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let stored = std::str::from_utf8(&tar[148..154]).expect("octal");
        assert_eq!(u32::from_str_radix(stored, 8), Ok(sum));
        assert_eq!(&tar[512..515], b"abc");
    }
}

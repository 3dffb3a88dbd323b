//! VMware OVA (imager spec §5.9): a tar of `disk.ovf` (OVF 1.0 descriptor), `disk.mf`
//! (SHA-256 manifest) and `disk.vmdk` (stream-optimised VMDK), in that member order.
//!
//! The OVF and manifest need the VMDK's size and digest, and they come first in the tar, so
//! the VMDK is written once to a scratch file (hashing while writing) and then copied into
//! the tar. The VMDK is about as large as the disk's data, never the disk's virtual size.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use crate::imager::SOURCE_DATE_EPOCH;
use crate::sha256::{Sha256, hex_digest};

use super::sparse::RawImage;
use super::vmdk::write_vmdk;

/// Member name of the descriptor.
pub const OVF_NAME: &str = "disk.ovf";
/// Member name of the manifest.
pub const MF_NAME: &str = "disk.mf";
/// Member name of the disk.
pub const VMDK_NAME: &str = "disk.vmdk";

/// The OVF descriptor (upstream's fixed template with its three substitutions).
pub fn ovf(vmdk_size: u64, disk_size: u64) -> String {
    let capacity = disk_size >> 20;
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="{VMDK_NAME}" ovf:id="file1" ovf:size="{vmdk_size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The VM Network network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="talos">
    <Info>A virtual machine</Info>
    <Name>talos</Name>
    <ProductSection ovf:required="false">
      <Info>Talos configuration</Info>
      <Property ovf:key="talos.config" ovf:type="string" ovf:userConfigurable="true" ovf:value="">
        <Label>Talos config data</Label>
        <Description>Inline Talos config</Description>
      </Property>
    </ProductSection>
    <OperatingSystemSection ovf:id="101" vmw:osType="other3xLinux64Guest">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection ovf:transport="com.vmware.guestInfo">
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>talos</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-15</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>2048MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard Disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>2</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:Description>VmxNet3 ethernet adapter on &quot;VM Network&quot;</rasd:Description>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:ElementName>Video card</rasd:ElementName>
        <rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceType>24</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:ElementName>VMCI device</rasd:ElementName>
        <rasd:InstanceID>7</rasd:InstanceID>
        <rasd:ResourceSubType>vmware.vmci</rasd:ResourceSubType>
        <rasd:ResourceType>1</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="cpuHotAddEnabled" vmw:value="false"/>
      <vmw:Config ovf:required="false" vmw:key="cpuHotRemoveEnabled" vmw:value="false"/>
      <vmw:Config ovf:required="false" vmw:key="memoryHotAddEnabled" vmw:value="false"/>
      <vmw:Config ovf:required="false" vmw:key="powerOpInfo.suspendType" vmw:value="soft"/>
      <vmw:Config ovf:required="false" vmw:key="tools.afterPowerOn" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="tools.afterResume" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="tools.beforeGuestShutdown" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="tools.beforeGuestStandby" vmw:value="true"/>
      <vmw:Config ovf:required="false" vmw:key="tools.syncTimeWithHost" vmw:value="false"/>
      <vmw:Config ovf:required="false" vmw:key="tools.toolsUpgradePolicy" vmw:value="manual"/>
      <vmw:ExtraConfig ovf:required="false" vmw:key="nvram" vmw:value="talos.nvram"/>
      <vmw:ExtraConfig ovf:required="false" vmw:key="disk.EnableUUID" vmw:value="true"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// The manifest: `SHA256(<name>)= <hex>` lines for the VMDK and the OVF.
pub fn manifest(vmdk_sha256: &str, ovf_text: &str) -> String {
    format!(
        "SHA256({VMDK_NAME})= {vmdk_sha256}\nSHA256({OVF_NAME})= {}\n",
        hex_digest(ovf_text.as_bytes())
    )
}

/// A writer that hashes what it passes on.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A tar header for a regular member with fixed metadata (root, 0644, `SOURCE_DATE_EPOCH`).
pub(crate) fn member_header(name: &str, size: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(SOURCE_DATE_EPOCH);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Writes the OVA of `img` into `out`, using a scratch file in `scratch_dir` for the VMDK.
pub fn write_ova(
    img: &RawImage,
    level: u32,
    scratch_dir: &Path,
    out: &mut dyn Write,
) -> io::Result<()> {
    let vmdk: File = tempfile::tempfile_in(scratch_dir)?;
    let mut hw = Hashing {
        inner: BufWriter::with_capacity(1 << 20, vmdk),
        hash: Sha256::new(),
    };
    let vmdk_size = write_vmdk(img, level, &mut hw)?;
    hw.flush()?;
    let Hashing { inner, hash } = hw;
    let mut vmdk = inner.into_inner().map_err(|e| e.into_error())?;
    let vmdk_sha = hash.finalize_hex();
    vmdk.seek(SeekFrom::Start(0))?;

    let ovf_text = ovf(vmdk_size, img.size());
    let mf = manifest(&vmdk_sha, &ovf_text);
    let mut tar = tar::Builder::new(out);
    tar.append(
        &member_header(OVF_NAME, ovf_text.len() as u64)?,
        ovf_text.as_bytes(),
    )?;
    tar.append(&member_header(MF_NAME, mf.len() as u64)?, mf.as_bytes())?;
    tar.append(&member_header(VMDK_NAME, vmdk_size)?, &mut vmdk)?;
    tar.into_inner()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ovf_substitutions() {
        let o = ovf(12345, 8192 << 20);
        assert!(o.contains(r#"ovf:href="disk.vmdk" ovf:id="file1" ovf:size="12345""#));
        assert!(o.contains(r#"ovf:capacity="8192" ovf:capacityAllocationUnits="byte * 2^20""#));
        assert!(o.contains("vmx-15") && o.contains("other3xLinux64Guest"));
    }

    #[test]
    fn manifest_lines() {
        let m = manifest("ab", "x");
        assert!(m.starts_with("SHA256(disk.vmdk)= ab\nSHA256(disk.ovf)= "));
        assert!(m.ends_with(&format!("{}\n", hex_digest(b"x"))));
    }
}

/**
 * Names of common GPT partition type GUIDs, for display. Sources: UEFI 2.10
 * table 5-7 (EFI System, legacy MBR), the UAPI Group "Discoverable Partitions
 * Specification" (Linux types), and Microsoft's "PARTITION_INFORMATION_GPT".
 */
const GPT_TYPE_NAMES: ReadonlyMap<string, string> = new Map([
  ['C12A7328-F81F-11D2-BA4B-00A0C93EC93B', 'EFI System'],
  ['024DEE41-33E7-11D3-9D69-0008C781F39F', 'MBR partition scheme'],
  ['21686148-6449-6E6F-744E-656564454649', 'BIOS boot'],
  ['0FC63DAF-8483-4772-8E79-3D69D8477DE4', 'Linux filesystem'],
  ['0657FD6D-A4AB-43C4-84E5-0933C84B4F4F', 'Linux swap'],
  ['E6D6D379-F507-44C2-A23C-238F2A3DF928', 'Linux LVM'],
  ['A19D880F-05FC-4D3B-A006-743F0F84911E', 'Linux RAID'],
  ['CA7D7CCB-63ED-4C53-861C-1742536059CC', 'Linux LUKS'],
  ['44479540-F297-41B2-9AF7-D131D5F0458A', 'Linux root (x86)'],
  ['4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709', 'Linux root (x86-64)'],
  ['69DAD710-2CE4-4E3C-B16C-21A1D49ABED3', 'Linux root (ARM)'],
  ['B921B045-1DF0-41C3-AF44-4C6F280D3FAE', 'Linux root (ARM-64)'],
  ['8484680C-9521-48C6-9C11-B0720656F69E', 'Linux /usr (x86-64)'],
  ['BC13C2FF-59E6-4262-A352-B275FD6F7172', 'Linux extended boot'],
  ['933AC7E1-2EB4-4F13-B844-0E14E2AEF915', 'Linux home'],
  ['3B8F8425-20E0-4F3B-907F-1A25A76F98E8', 'Linux server data'],
  ['4D21B016-B534-45C2-A9FB-5C16E091FD2D', 'Linux variable data'],
  ['7EC6F557-3BC5-4ACA-B293-16EF5DF639D1', 'Linux temporary data'],
  ['8DA63339-0007-60C0-C436-083AC8230908', 'Linux reserved'],
  ['EBD0A0A2-B9E5-4433-87C0-68B6B72699C7', 'Microsoft basic data'],
  ['E3C9E316-0B5C-4DB8-817D-F92DF00215AE', 'Microsoft reserved'],
  ['DE94BBA4-06D1-4D40-A16A-BFD50179D6AC', 'Windows recovery environment'],
  ['5808C8AA-7E8F-42E0-85D2-E1E90434CFB3', 'Microsoft LDM metadata'],
  ['AF9B60A0-1431-4F62-BC68-3311714A69AD', 'Microsoft LDM data'],
  ['48465300-0000-11AA-AA11-00306543ECAC', 'Apple HFS/HFS+'],
  ['7C3457EF-0000-11AA-AA11-00306543ECAC', 'Apple APFS'],
]);

/** The display name of a GPT type GUID (upper-case textual form), or "Unknown". */
export function gptTypeName(typeGuid: string): string {
  return GPT_TYPE_NAMES.get(typeGuid.toUpperCase()) ?? 'Unknown';
}

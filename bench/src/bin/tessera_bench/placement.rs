//! `--spawn-placement`: which CPUs a spawned cluster's nodes may run on.
//!
//! A cluster spawned on a machine with fewer CPUs than its nodes have cores shares the CPUs
//! between the nodes. Left to the OS, a node the leader wakes (by sending it an append) is
//! often placed on the leader's CPU and preempts it between its sends and its own WAL
//! write, and a follower on the CPU that takes the disk's interrupts competes with the
//! kernel workers that complete its own `O_DSYNC` writes. `leader-apart` gives the node
//! that leads the most Regions the CPU that takes the data disk's interrupts (its own
//! write's completion work runs there while it waits anyway) and the other nodes the
//! remaining CPUs, once the cluster has its leaders. docs/benchmarks.md (pass L) has the
//! measurements; a real deployment runs one node per machine and needs none of this.

use std::path::Path;

pub use tessera_node::config::allowed_cpus;

/// How the nodes of a spawned cluster are placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SpawnPlacement {
    /// `leader-apart` when the machine has fewer CPUs than the nodes have cores, else `os`.
    Auto,
    /// The OS scheduler places every node on any CPU.
    Os,
    /// The leading node gets the disk's interrupt CPU, the other nodes the other CPUs.
    LeaderApart,
}

/// The CPUs each node (index 0 = node 1) may run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub cpus: Vec<Vec<usize>>,
    /// One line for the report, e.g. "node 1 (leads 2 of 2 Regions) on CPU 1 (disk
    /// interrupts), nodes 2, 3 on CPU 0".
    pub summary: String,
}

/// Whether `auto` places: the nodes' cores outnumber the CPUs.
pub fn oversubscribed(cpus: usize, nodes: usize, cores_per_node: usize) -> bool {
    cpus < nodes * cores_per_node
}

/// The plan for `leader-apart`: `led[i]` is how many Regions node `i + 1` leads, `allowed`
/// the CPUs this process may use, `interrupt_cpu` the CPU that takes the data disk's
/// interrupts if known. The leading node gets `cores` CPUs (the interrupt CPU first, then
/// the highest others), the other nodes share the rest. `None` when there are fewer than
/// two CPUs or a single node (nothing to separate).
pub fn leader_apart(
    allowed: &[usize],
    interrupt_cpu: Option<usize>,
    led: &[usize],
    cores: usize,
) -> Option<Plan> {
    if allowed.len() < 2 || led.len() < 2 {
        return None;
    }
    let leader = (0..led.len()).max_by_key(|&i| (led[i], std::cmp::Reverse(i)))?;
    let first = interrupt_cpu
        .filter(|cpu| allowed.contains(cpu))
        .unwrap_or(*allowed.last().expect("two CPUs"));
    let mut leader_cpus = vec![first];
    let take = cores.clamp(1, allowed.len() - 1);
    for cpu in allowed.iter().rev() {
        if leader_cpus.len() == take {
            break;
        }
        if !leader_cpus.contains(cpu) {
            leader_cpus.push(*cpu);
        }
    }
    leader_cpus.sort_unstable();
    let others: Vec<usize> = allowed
        .iter()
        .copied()
        .filter(|cpu| !leader_cpus.contains(cpu))
        .collect();
    let cpus = (0..led.len())
        .map(|i| {
            if i == leader {
                leader_cpus.clone()
            } else {
                others.clone()
            }
        })
        .collect();
    let list = |cpus: &[usize]| {
        cpus.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let other_nodes: Vec<usize> = (0..led.len())
        .filter(|&i| i != leader)
        .map(|i| i + 1)
        .collect();
    let regions: usize = led.iter().sum();
    let summary = format!(
        "node {} (leads {} of {regions} Regions) on CPU {}{}, nodes {} on CPU {}",
        leader + 1,
        led[leader],
        list(&leader_cpus),
        if interrupt_cpu == Some(first) {
            " (disk interrupts)"
        } else {
            ""
        },
        list(&other_nodes),
        list(&others)
    );
    Some(Plan { cpus, summary })
}

/// The CPUs `--generator-cpus` names, checked against `allowed` (this process's CPUs).
///
/// # Errors
/// A message naming the option and what is wrong with the list.
pub fn generator_cpus(list: &str, allowed: &[usize]) -> anyhow::Result<Vec<usize>> {
    tessera_node::config::parse_cpu_list(list, allowed).map_err(|why| {
        anyhow::anyhow!("--generator-cpus {list:?}: {why} (use a list like \"1\" or \"0,1\")")
    })
}

/// Restricts every thread of process `pid` to `cpus` (threads it starts later inherit it).
///
/// # Errors
/// When the process's threads cannot be listed or a thread refuses the mask (other than
/// one that exited meanwhile).
pub fn pin_process(pid: u32, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: CPU_SET on a valid set; `cpu` comes from our own affinity mask.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Some(tid) = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: the pointer and size describe `set`; `tid` is a thread id.
        let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::ESRCH) {
                return Err(error);
            }
        }
    }
    Ok(())
}

/// The CPU that took most of the interrupts of the disk holding `path`, from sysfs (the
/// disk's PCI device and its MSI interrupts) and `/proc/interrupts`; `None` when any of it
/// is unknown (e.g. no PCI device, as for a RAM disk).
pub fn disk_interrupt_cpu(path: &Path) -> Option<usize> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let interrupts = std::fs::read_to_string("/proc/interrupts").ok()?;
    interrupt_cpu_under(
        Path::new("/sys"),
        (libc::major(dev), libc::minor(dev)),
        &interrupts,
    )
}

/// [`disk_interrupt_cpu`] with sysfs at `sys` (a fake tree in tests): the block device
/// `major:minor` (its disk if it is a partition), up its `device` link to the first
/// ancestor with `msi_irqs`, and those interrupts' busiest CPU in `interrupts`.
fn interrupt_cpu_under(sys: &Path, (major, minor): (u32, u32), interrupts: &str) -> Option<usize> {
    let mut block = std::fs::canonicalize(sys.join(format!("dev/block/{major}:{minor}"))).ok()?;
    if block.join("partition").exists() {
        block.pop();
    }
    let mut device = std::fs::canonicalize(block.join("device")).ok()?;
    let devices = std::fs::canonicalize(sys.join("devices")).ok()?;
    let irqs = loop {
        if let Ok(entries) = std::fs::read_dir(device.join("msi_irqs")) {
            break entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .collect::<Vec<_>>();
        }
        if !device.pop() || !device.starts_with(&devices) {
            return None;
        }
    };
    busiest_cpu(interrupts, &irqs)
}

/// In `/proc/interrupts` text, the CPU with the most interrupts on the lines of `irqs`.
fn busiest_cpu(interrupts: &str, irqs: &[u32]) -> Option<usize> {
    let mut lines = interrupts.lines();
    let cpus = lines.next()?.split_whitespace().count();
    let mut totals = vec![0u64; cpus];
    for line in lines {
        let Some((number, rest)) = line.trim_start().split_once(':') else {
            continue;
        };
        if !number.parse::<u32>().is_ok_and(|n| irqs.contains(&n)) {
            continue;
        }
        for (total, count) in totals.iter_mut().zip(rest.split_whitespace()) {
            *total += count.parse::<u64>().unwrap_or(0);
        }
    }
    let (cpu, most) = totals
        .iter()
        .enumerate()
        .max_by_key(|(cpu, count)| (**count, std::cmp::Reverse(*cpu)))?;
    (*most > 0).then_some(cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERRUPTS: &str = "           CPU0       CPU1
  35:          0          1  PCI-MSIX-0000:00:02.0   0-edge      virtio1-config
  36:          0   63302542  PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0
  41:      20042          0  PCI-MSIX-0000:00:04.0   1-edge      virtio3-rx
 NMI:          0          0   Non-maskable interrupts
";

    #[test]
    fn the_busiest_cpu_counts_only_the_disks_interrupts() {
        assert_eq!(busiest_cpu(INTERRUPTS, &[35, 36]), Some(1));
        assert_eq!(busiest_cpu(INTERRUPTS, &[41]), Some(0));
        assert_eq!(busiest_cpu(INTERRUPTS, &[99]), None, "no such interrupt");
        assert_eq!(busiest_cpu("", &[36]), None);
    }

    #[test]
    fn the_leader_gets_the_interrupt_cpu_and_the_others_share_the_rest() {
        let plan = leader_apart(&[0, 1], Some(1), &[2, 0, 0], 1).unwrap();
        assert_eq!(plan.cpus, vec![vec![1], vec![0], vec![0]]);
        assert_eq!(
            plan.summary,
            "node 1 (leads 2 of 2 Regions) on CPU 1 (disk interrupts), nodes 2, 3 on CPU 0"
        );
        // Node 3 leads more; the interrupt CPU is 0 here.
        let plan = leader_apart(&[0, 1], Some(0), &[0, 1, 2], 1).unwrap();
        assert_eq!(plan.cpus, vec![vec![1], vec![1], vec![0]]);
    }

    #[test]
    fn without_an_interrupt_cpu_the_leader_gets_the_last_and_as_many_as_its_cores() {
        let plan = leader_apart(&[0, 1, 2, 3], None, &[1, 1, 0], 2).unwrap();
        assert_eq!(plan.cpus[0], vec![2, 3], "ties go to the lowest node");
        assert_eq!(plan.cpus[1], vec![0, 1]);
        assert!(!plan.summary.contains("interrupts"));
        // An interrupt CPU this process may not use is ignored; at least one CPU stays for
        // the others however many cores the leader has.
        let plan = leader_apart(&[2, 3], Some(0), &[0, 1, 0], 8).unwrap();
        assert_eq!(plan.cpus, vec![vec![2], vec![3], vec![2]]);
    }

    #[test]
    fn nothing_to_separate_on_one_cpu_or_with_one_node() {
        assert_eq!(leader_apart(&[0], Some(0), &[1, 0, 0], 1), None);
        assert_eq!(leader_apart(&[0, 1], Some(1), &[2], 1), None);
        assert!(oversubscribed(2, 3, 1));
        assert!(!oversubscribed(4, 3, 1));
    }

    #[test]
    fn generator_cpus_must_be_distinct_cpus_this_process_may_use() {
        assert_eq!(generator_cpus(" 1 ", &[0, 1]).unwrap(), vec![1]);
        assert_eq!(generator_cpus("1,0", &[0, 1]).unwrap(), vec![1, 0]);
        for (list, why) in [
            ("2", "CPU 2 is not one this process may run on ([0, 1])"),
            ("1,1", "listed twice"),
            ("one", "invalid digit"),
            ("", "empty string"),
        ] {
            let error = generator_cpus(list, &[0, 1]).unwrap_err().to_string();
            assert!(error.starts_with("--generator-cpus"), "{list:?}: {error}");
            assert!(error.contains(why), "{list:?}: {error}");
        }
    }

    #[test]
    fn pinning_a_process_restricts_each_of_its_threads() {
        let allowed = allowed_cpus();
        assert!(!allowed.is_empty());
        // A child that waits for its standard input to close.
        let mut child = std::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let cpu = *allowed.last().unwrap();
        let pinned = pin_process(child.id(), &[cpu]);
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        drop(child.stdin.take());
        child.wait().unwrap();
        pinned.unwrap();
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string();
        assert_eq!(list, cpu.to_string());
    }

    #[test]
    fn the_disks_interrupts_are_found_through_its_pci_device() {
        // A virtio disk as sysfs shows it: the partition's disk, its device link to the
        // virtio device, whose PCI parent lists the MSI interrupts.
        let sys = tempfile::tempdir().unwrap();
        let pci = sys.path().join("devices/pci0000:00/0000:00:02.0");
        let disk = pci.join("virtio1/block/vda");
        std::fs::create_dir_all(disk.join("vda1")).unwrap();
        std::fs::write(disk.join("vda1/partition"), "1").unwrap();
        std::fs::create_dir_all(pci.join("msi_irqs")).unwrap();
        std::fs::write(pci.join("msi_irqs/35"), "msix").unwrap();
        std::fs::write(pci.join("msi_irqs/36"), "msix").unwrap();
        std::os::unix::fs::symlink(pci.join("virtio1"), disk.join("device")).unwrap();
        std::fs::create_dir_all(sys.path().join("dev/block")).unwrap();
        std::os::unix::fs::symlink(disk.join("vda1"), sys.path().join("dev/block/254:1")).unwrap();
        std::os::unix::fs::symlink(disk.join("zram"), sys.path().join("dev/block/251:0")).unwrap();
        assert_eq!(
            interrupt_cpu_under(sys.path(), (254, 1), INTERRUPTS),
            Some(1)
        );
        // Without MSI interrupts up the chain (or no such device): unknown.
        std::fs::remove_dir_all(pci.join("msi_irqs")).unwrap();
        assert_eq!(interrupt_cpu_under(sys.path(), (254, 1), INTERRUPTS), None);
        assert_eq!(interrupt_cpu_under(sys.path(), (251, 0), INTERRUPTS), None);
    }
}

use super::*;

#[test]
fn device_specs_parse_and_print() {
    for (s, want) in [
        ("auto", DeviceSpec::Auto),
        ("cpu", DeviceSpec::Cpu),
        ("cuda", DeviceSpec::Cuda(0)),
        ("cuda:0", DeviceSpec::Cuda(0)),
        ("cuda:7", DeviceSpec::Cuda(7)),
    ] {
        assert_eq!(s.parse::<DeviceSpec>().unwrap(), want, "{s}");
    }
    assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
}

#[test]
fn bad_device_specs_say_why() {
    for (s, why) in [
        ("gpu", "unknown device kind"),
        ("cuda:", "decimal number"),
        ("cuda:-1", "decimal number"),
        ("cuda:+1", "decimal number"),
        ("cuda:1x", "decimal number"),
        ("cuda:99999999999999999999999", "too large"),
        ("cuda:1024", "too large"),
        ("CPU", "unknown device kind"),
        ("", "unknown device kind"),
    ] {
        let e = s.parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(e.contains(why), "{s:?}: {e}");
        assert!(e.contains("expected auto, cpu, cuda or cuda:N"), "{e}");
    }
}

#[test]
fn cpu_and_auto_open_without_a_gpu() {
    assert!(open(DeviceSpec::Cpu).unwrap().is_cpu());
    if cuda_device_count() == 0 {
        assert!(open(DeviceSpec::Auto).unwrap().is_cpu());
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_on_a_cpu_build_is_a_clear_error() {
    let e = open(DeviceSpec::Cuda(0)).unwrap_err().to_string();
    assert!(e.contains("built without it"), "{e}");
    assert!(e.contains("--features cuda"), "{e}");
}

"""Drives vmedia's VirtualMedia the way OpenStack Ironic does, through sushy (Debian python3-sushy).

Usage: sushy-driver.py <base-url> <collection: manager|system> <insert IMAGE|eject IMAGE>
       sushy-driver.py <base-url> system boot IMAGE     (Ironic's virtual media boot, up to power on)
       sushy-driver.py <base-url> system finish IMAGE   (after the boot: read the override, power off, eject)
The admin password comes on stdin. Prints one JSON object: the member sushy chose and its fields after
the operation, as sushy reads them (or, for boot and finish, what the system showed at each step).
"""
import json
import sys
import time

import sushy
from sushy.resources.manager import constants as mgr_cons
from sushy.resources.manager import virtual_media

base_url, collection, operation, image = sys.argv[1:5]
password = sys.stdin.readline().rstrip("\n")
root = sushy.Sushy(base_url, username="admin", password=password, verify=False)

def wait_for_power(system, state, timeout=60):
    """Ironic's _wait_for_power_state: refresh until PowerState is what was asked for."""
    deadline = time.monotonic() + timeout
    while True:
        system.refresh()
        if system.power_state == state:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"power state stayed {system.power_state}, wanted {state}")
        time.sleep(0.2)


def boot_view(system):
    system.refresh()
    value = lambda field: None if field is None else field.value  # noqa: E731
    return {"target": value(system.boot.target), "enabled": value(system.boot.enabled),
            "power_state": value(system.power_state)}


def eject_inserted_cds(members):
    """Ironic's eject_vmedia: every inserted CD/DVD member is ejected."""
    ejected = []
    for media in members.get_members():
        kinds = media.media_types
        if (mgr_cons.VirtualMediaType.CD in kinds or mgr_cons.VirtualMediaType.DVD in kinds) and media.inserted:
            media.eject_media()
            ejected.append(media.identity)
    return ejected


if operation in ("boot", "finish"):
    system = root.get_system("/redfish/v1/Systems/system")
    members = virtual_media.VirtualMediaCollection(
        root._conn, "/redfish/v1/Systems/system/VirtualMedia",
        redfish_version=root.redfish_version, registries=root.lazy_registries, root=root)
    steps = {}
    if operation == "boot":
        steps["allowed_resets"] = sorted(str(v) for v in system.get_allowed_reset_system_values())
        system.reset_system(sushy.ResetType.FORCE_OFF)
        wait_for_power(system, sushy.PowerState.OFF)
        steps["ejected"] = eject_inserted_cds(members)
        # Ironic's _insert_vmedia: the first CD member that is free takes the image.
        cd = next(m for m in members.get_members()
                  if mgr_cons.VirtualMediaType.CD in m.media_types and not m.inserted)
        cd.insert_media(image, inserted=True, write_protected=True)
        cd.refresh()
        steps["inserted"] = {"path": cd.path, "inserted": cd.inserted, "image": cd.image}
        system.set_system_boot_options(target=sushy.BootSource.CD,
                                       enabled=sushy.BootSourceOverrideEnabled.ONCE)
        steps["override"] = boot_view(system)
        system.reset_system(sushy.ResetType.ON)
        wait_for_power(system, sushy.PowerState.ON)
        steps["powered_on"] = boot_view(system)
    else:
        steps["after_boot"] = boot_view(system)
        system.reset_system(sushy.ResetType.FORCE_OFF)
        wait_for_power(system, sushy.PowerState.OFF)
        steps["ejected"] = eject_inserted_cds(members)
        steps["powered_off"] = boot_view(system)
    print(json.dumps(steps))
    sys.exit(0)

if collection == "manager":
    members = root.get_manager("/redfish/v1/Managers/bmc").virtual_media
else:
    # sushy 4.3 has no System.virtual_media; the ComputerSystem collection is built the same way.
    members = virtual_media.VirtualMediaCollection(
        root._conn, "/redfish/v1/Systems/system/VirtualMedia",
        redfish_version=root.redfish_version, registries=root.lazy_registries, root=root)

chosen = None
for media in members.get_members():
    # Ironic's _insert_vmedia: the first member of the wanted type that is free (or holds this image).
    if mgr_cons.VirtualMediaType.CD not in media.media_types:
        continue
    if operation == "insert" and not media.inserted:
        media.insert_media(image, inserted=True, write_protected=True)
        chosen = media
        break
    if operation == "eject" and media.inserted and media.image == image:
        media.eject_media()
        chosen = media
        break

if chosen is None:
    print(json.dumps({"error": f"no member to {operation}"}))
    sys.exit(1)
chosen.refresh()
print(json.dumps({
    "path": chosen.path,
    "identity": chosen.identity,
    "inserted": chosen.inserted,
    "image": chosen.image,
    "connected_via": str(chosen.connected_via),
    "verify_certificate": chosen.verify_certificate,
}))

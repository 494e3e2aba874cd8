"""Drives vmedia's VirtualMedia the way OpenStack Ironic does, through sushy (Debian python3-sushy).

Usage: sushy-driver.py <base-url> <collection: manager|system> <insert IMAGE|eject IMAGE>
The admin password comes on stdin. Prints one JSON object: the member sushy chose and its fields after
the operation, as sushy reads them.
"""
import json
import sys

import sushy
from sushy.resources.manager import constants as mgr_cons
from sushy.resources.manager import virtual_media

base_url, collection, operation, image = sys.argv[1:5]
password = sys.stdin.readline().rstrip("\n")
root = sushy.Sushy(base_url, username="admin", password=password, verify=False)

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

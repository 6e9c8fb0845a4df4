#!/usr/bin/env python3
"""A CSI client on grpc-core (Python grpcio), as kubelet's Go client is not:
grpc-core sends the %-encoded socket path as the HTTP/2 :authority, which an
endpoint must accept (issue 8, finding 9). Drives one volume through carve:
Probe, CreateVolume, NodeStage, NodePublish, a file written and read back,
NodeUnpublish, NodeUnstage, DeleteVolume.

    csi_client.py SOCKET WORKDIR

The channel is made with grpcio's defaults: no authority override.
Exits 0 when every step answered as expected; prints each step.
"""
import os
import subprocess
import sys
import tempfile

import grpc
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))


def load_stubs(out):
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{well_known}",
                      f"--python_out={out}", f"--grpc_python_out={out}", "csi.proto"])
    if rc != 0:
        sys.exit(f"protoc failed: {rc}")
    sys.path.insert(0, out)
    import csi_pb2, csi_pb2_grpc  # noqa: E402
    return csi_pb2, csi_pb2_grpc


def main():
    sock, work = sys.argv[1], sys.argv[2]
    pb, rpc = load_stubs(tempfile.mkdtemp(prefix="csi-py-"))
    channel = grpc.insecure_channel(f"unix://{sock}")
    ident, ctrl, node = rpc.IdentityStub(channel), rpc.ControllerStub(channel), rpc.NodeStub(channel)

    probe = ident.Probe(pb.ProbeRequest(), timeout=30)
    print("Probe:", probe.ready.value)
    assert probe.ready.value, "carve is not ready"

    cap = pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(fs_type="ext4"),
        access_mode=pb.VolumeCapability.AccessMode(
            mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))
    vol = ctrl.CreateVolume(pb.CreateVolumeRequest(
        name="python-grpcio-client", volume_capabilities=[cap],
        capacity_range=pb.CapacityRange(required_bytes=32 << 20)), timeout=60).volume
    print("CreateVolume:", vol.volume_id, vol.capacity_bytes)

    stage = os.path.join(work, "stage")
    target = os.path.join(work, "pod", "target")
    os.makedirs(stage, exist_ok=True)
    node.NodeStageVolume(pb.NodeStageVolumeRequest(
        volume_id=vol.volume_id, staging_target_path=stage, volume_capability=cap,
        volume_context=vol.volume_context), timeout=60)
    print("NodeStageVolume: ok")
    node.NodePublishVolume(pb.NodePublishVolumeRequest(
        volume_id=vol.volume_id, staging_target_path=stage, target_path=target,
        volume_capability=cap, volume_context=vol.volume_context), timeout=60)
    print("NodePublishVolume: ok")
    with open(os.path.join(target, "hello.txt"), "w") as f:
        f.write("written through grpc-core")
    with open(os.path.join(target, "hello.txt")) as f:
        assert f.read() == "written through grpc-core"
    mounts = subprocess.run(["findmnt", "-n", "-o", "SOURCE", target],
                            capture_output=True, text=True).stdout
    print("mounted:", mounts.strip())
    assert mounts.strip(), "target is not a mount point"

    node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(
        volume_id=vol.volume_id, target_path=target), timeout=60)
    node.NodeUnstageVolume(pb.NodeUnstageVolumeRequest(
        volume_id=vol.volume_id, staging_target_path=stage), timeout=60)
    print("NodeUnpublishVolume, NodeUnstageVolume: ok")
    ctrl.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vol.volume_id), timeout=60)
    print("DeleteVolume: ok")
    try:
        ctrl.ControllerGetVolume(pb.ControllerGetVolumeRequest(volume_id=vol.volume_id), timeout=30)
        sys.exit("the deleted volume is still there")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
    print("python grpcio client: all steps ok, grpc", grpc.__version__)


if __name__ == "__main__":
    main()

# A carve volume for Nomad, made with:
#   nomad volume create deploy/nomad/volume.hcl
# It lives on worker-1: plugin_id names that node's carve plugin, and the
# topology request says so too (Nomad then places its users on that node).
id        = "db-data"
name      = "db-data"
type      = "csi"
plugin_id = "carve-worker-1"

capacity_min = "10GiB"
capacity_max = "20GiB"

capability {
  access_mode     = "single-node-writer"
  attachment_mode = "file-system"
}

mount_options {
  fs_type = "ext4"
}

# StorageClass-style parameters: the device class of the node's config.
parameters {
  "carve.dev/device-class" = "thick"
}

topology_request {
  required {
    topology {
      segments {
        "topology.carve.dev/node" = "worker-1"
      }
    }
  }
}

# carve as a Nomad CSI plugin (monolith: Controller and Node in one task), for
# ONE client node. Run it once per storage node:
#   nomad job run -var node=worker-1 deploy/nomad/carve-plugin.nomad.hcl
#
# Why one job per node: Nomad sends every controller call (create, delete,
# expand, snapshot) of a plugin ID to one healthy instance of that plugin,
# whichever node the volume is on. carve acts only on its own node's LVM, so
# each node is a plugin of its own, `carve-<node>`, and a volume names the
# plugin of the node it lives on (see volume.hcl). Nomad cannot template a
# plugin ID per node inside one system job (hashicorp/nomad#11116).

variable "node" {
  type        = string
  description = "The Nomad client (node.unique.name) this plugin instance serves."
}

variable "image" {
  type    = string
  default = "localhost/carve:0.1.0"
}

job "carve-plugin-${var.node}" {
  type = "system"

  constraint {
    attribute = "${node.unique.name}"
    value     = var.node
  }

  group "carve" {
    task "plugin" {
      driver = "docker"

      config {
        image = var.image
        args = [
          "serve",
          "--node-id=${node.unique.name}",
          # Nomad sets CSI_ENDPOINT to a socket under mount_dir.
          "--endpoint=${CSI_ENDPOINT}",
          "--config=/local/config.toml",
        ]
        # LVM (device-mapper and loop ioctls, device nodes) and mounts that
        # must reach the host: see docs/image.md.
        privileged = true
        # Nomad mounts /dev, mount_dir and the staging/publish directory
        # itself; these are LVM's shared state on the host (as in the
        # Kubernetes DaemonSet).
        mount {
          type   = "bind"
          source = "/run/lock/lvm"
          target = "/run/lock/lvm"
        }
        mount {
          type   = "bind"
          source = "/run/lvm"
          target = "/run/lvm"
        }
        mount {
          type   = "bind"
          source = "/etc/lvm/backup"
          target = "/etc/lvm/backup"
        }
        mount {
          type   = "bind"
          source = "/etc/lvm/archive"
          target = "/etc/lvm/archive"
        }
        mount {
          type     = "bind"
          source   = "/lib/modules"
          target   = "/lib/modules"
          readonly = true
        }
      }

      csi_plugin {
        id             = "carve-${var.node}"
        type           = "monolith"
        mount_dir      = "/csi"
        health_timeout = "60s"
      }

      # The node configuration (docs/configuration.md): the VGs must exist on
      # this node.
      template {
        destination = "local/config.toml"
        data        = <<-TOML
          # Nomad hands carve staging and publish paths under mount_dir.
          node_path_roots = ["/csi"]

          [[device_class]]
          name = "thick"
          volume_group = "carve"
          type = "thick"
          default = true
          spare = "1Gi"

          [[device_class]]
          name = "thin"
          volume_group = "carve"
          type = "thin"
          thin_pool = "carve-pool"
          over_provision_ratio = 2.0
        TOML
      }

      resources {
        cpu    = 100
        memory = 256
      }
    }
  }
}

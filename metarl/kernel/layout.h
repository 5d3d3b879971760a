#pragma once
// The described structures of a call (mirrored by metarl/native.py as ctypes.Structure classes
// of the same names and field order; metarl_struct_sizes lets it check that they agree).

#include "vecmath.h"

extern "C" {

// The actor network: layers and layer sizes [n_0 .. n_L].
struct Network {
    int64_t layers;
    int64_t sizes[MAX_LAYERS + 1];
};

// The env's and the rule's options (metarl.envs.base.EnvOptions, the actor config and the conditions).
struct Options {
    float max_torque, max_speed;  // max_speed <= 0: none
    float obs_noise;              // std of the sensor noise on the observation; 0: none
    float weight_limit, sigma_limit;  // (dt and the learning rate are per individual: Buffers)
    int32_t env;  // the environment: its id in physics.h ENVS (metarl_env)
    int32_t rk4, reward_delta, plastic, zero_reward, noise, spin, gym;
    int64_t goal_switch;  // the goal flips from this step number on; -1 = never
};

// Where one cell's parameters start in the genome (metarl.genome.GenomeLayout), each part row-major.
struct CellMap {
    int32_t inputs, outputs, w_state, b_state, w_output, b_output;
};

struct GenomeMap {
    CellMap reward, node, connection;
    int32_t size;  // genes per individual
};

// The state of a population, each (features, P) float32; the kernel updates all but the first six.
struct Buffers {
    float* genome;      // (G, P)
    float* env_params;  // (params of the env, P): physics.h ENVS, metarl.envs param_defaults order
    float* sign;        // (1, P) motor direction
    float* goal;        // (1, P) hidden goal
    float* dt;          // (1, P) integration step
    float* learning_rate;  // (1, P) the rule's rate
    float* state;       // (2 * links, P)
    float* prev_height; // (1, P)
    float* weights[MAX_LAYERS];  // (n_{k-1} * n_k, P)
    float* biases[MAX_LAYERS];   // (n_k, P), as sigmas, sums, samples, outputs
    float* sigmas[MAX_LAYERS];
    float* sums[MAX_LAYERS];
    float* samples[MAX_LAYERS];
    float* outputs[MAX_LAYERS];
    float* rule_reward;          // (n_L * H, P)
    float* nodes[MAX_LAYERS];    // (n_k * H, P)
    float* edges[MAX_LAYERS];    // (n_{k-1} * n_k * H, P)
};

}  // extern "C"

// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title A Lethe that lets anyone emit any event (TEST ONLY)
/// @notice Same events as contracts/Lethe.sol, no access control and no state: a test can
///         write a history the real contract would refuse (an approval from an address that
///         was never admitted) and check that the audit, which reads events only, rejects it.
/// @dev Named Lethe so coordinator.contract_build.compile_contract builds it unchanged.
contract Lethe {
    uint256 public immutable deployedBlock;

    event CoordinatorAdmitted(address indexed coordinator, address indexed previous);
    event NodeAdmitted(address indexed node, uint256 nodeCount);
    event NodeRemoved(address indexed node, uint256 nodeCount);
    event KeyRegistered(address indexed node, bytes32 key);
    event QuorumSet(uint32 configuredQuorum);
    event RoundProposed(
        uint64 indexed round,
        address indexed proposer,
        bytes32 globalModelHash,
        string globalModelCid,
        bytes32 updatesRoot,
        string manifestCid,
        uint32 quorum,
        uint256 nodeCount
    );
    event RoundApproved(uint64 indexed round, address indexed node, uint32 approvals);
    event RoundApprovedBy(uint64 indexed round, address[] nodes, uint32 approvals);
    event RoundFinalized(uint64 indexed round, uint32 approvals, uint32 quorum);
    event ForgetRequested(
        bytes32 indexed requestId, bytes32 recordCommitment, address indexed coordinator, address indexed node
    );
    event ForgetCertified(
        bytes32 indexed requestId,
        address indexed node,
        string certificateCid,
        bytes32 newModelHash,
        uint64 afterRound
    );
    event ForgetCompleted(bytes32 indexed requestId, uint64 indexed round, address indexed node);
    event StakePolicySet(
        uint128 requiredStake,
        uint128 slashAmount,
        uint96 rewardPerRound,
        uint64 forgetDeadlineBlocks,
        uint64 unstakeDelayBlocks
    );
    event Staked(address indexed node, uint256 amount, uint256 total);
    event RewardsFunded(address indexed funder, uint256 amount, uint256 pool);
    event RewardClaimed(uint64 indexed round, address indexed node, uint256 amount);
    event ForgetSlashed(
        bytes32 indexed requestId, address indexed node, address indexed caller, uint256 amount, uint256 stakeLeft
    );

    constructor() {
        deployedBlock = block.number;
    }

    function coordinatorAdmitted(address coordinator, address previous) external {
        emit CoordinatorAdmitted(coordinator, previous);
    }

    function nodeAdmitted(address node, uint256 nodeCount) external {
        emit NodeAdmitted(node, nodeCount);
    }

    function nodeRemoved(address node, uint256 nodeCount) external {
        emit NodeRemoved(node, nodeCount);
    }

    function quorumSet(uint32 configuredQuorum) external {
        emit QuorumSet(configuredQuorum);
    }

    function roundProposed(
        uint64 round,
        address proposer,
        bytes32 globalModelHash,
        string calldata globalModelCid,
        bytes32 updatesRoot,
        string calldata manifestCid,
        uint32 quorum,
        uint256 nodeCount
    ) external {
        emit RoundProposed(round, proposer, globalModelHash, globalModelCid, updatesRoot, manifestCid, quorum, nodeCount);
    }

    function roundApproved(uint64 round, address node, uint32 approvals) external {
        emit RoundApproved(round, node, approvals);
    }

    function roundApprovedBy(uint64 round, address[] calldata nodes, uint32 approvals) external {
        emit RoundApprovedBy(round, nodes, approvals);
    }

    function roundFinalized(uint64 round, uint32 approvals, uint32 quorum) external {
        emit RoundFinalized(round, approvals, quorum);
    }

    function stakePolicySet(uint128 required, uint128 slashAmount, uint96 reward, uint64 deadline, uint64 delay)
        external
    {
        emit StakePolicySet(required, slashAmount, reward, deadline, delay);
    }

    function staked(address node, uint256 amount, uint256 total) external {
        emit Staked(node, amount, total);
    }

    function rewardsFunded(uint256 amount, uint256 pool) external {
        emit RewardsFunded(msg.sender, amount, pool);
    }

    function rewardClaimed(uint64 round, address node, uint256 amount) external {
        emit RewardClaimed(round, node, amount);
    }

    function forgetSlashed(bytes32 requestId, address node, uint256 amount, uint256 stakeLeft) external {
        emit ForgetSlashed(requestId, node, msg.sender, amount, stakeLeft);
    }
}
